//! The retry schedule: when the next attempt of a failed delivery happens, if at all.

use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::domain::NextStep;

/// Delays between attempts, with jitter, and the bounds within which `Retry-After` is obeyed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before attempt 2, 3, ...; its length + 1 is the number of attempts.
    pub delays: Vec<Duration>,
    /// Each delay is scaled by a factor drawn uniformly from `1 ± jitter`.
    pub jitter: f64,
    /// A `Retry-After` shorter than this is raised to it.
    pub retry_after_min: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 27.6 hours: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h and 10 h, each ±20%; `Retry-After` obeyed between 1 s and 6 h.
    fn default() -> Self {
        Self {
            delays: DEFAULT_SCHEDULE
                .parse::<Schedule>()
                .map(|s| s.0)
                .unwrap_or_default(),
            jitter: 0.2,
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(6 * 3600),
        }
    }
}

/// The default schedule in the syntax of `--retry-schedule`.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

impl RetryPolicy {
    /// What follows a failed attempt, given how many attempts of the current round have now
    /// been made (including this one) and the receiver's `Retry-After`, if any.
    pub fn after_failure(
        &self,
        attempts_in_round: u32,
        now_ms: i64,
        retry_after: Option<Duration>,
    ) -> NextStep {
        let Some(scheduled) = self
            .delays
            .get(attempts_in_round.saturating_sub(1) as usize)
        else {
            return NextStep::Exhausted;
        };
        let delay = match retry_after {
            Some(asked) => asked.clamp(self.retry_after_min, self.retry_after_max),
            None => {
                let factor = if self.jitter > 0.0 {
                    rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter)
                } else {
                    1.0
                };
                scheduled.mul_f64(factor)
            }
        };
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        NextStep::RetryAt(now_ms.saturating_add(delay_ms))
    }

    /// Total time the schedule spans without jitter.
    pub fn span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

/// A comma-separated list of delays such as `5s,5m,30m,2h` (units ms, s, m, h, d).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule(pub Vec<Duration>);

/// Why a schedule string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry schedule item {item:?}: {rule}")]
pub struct ScheduleError {
    /// The offending item.
    pub item: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        if s.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|item| parse_duration(item.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

fn parse_duration(item: &str) -> Result<Duration, ScheduleError> {
    let err = |rule| ScheduleError {
        item: item.to_owned(),
        rule,
    };
    let split = item
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| err("needs a unit: ms, s, m, h or d"))?;
    let (digits, unit) = item.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| err("must start with a whole number"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err("unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| err("too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_a_day_and_has_eight_attempts() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delays.len() + 1, 8);
        assert!(
            policy.span() >= Duration::from_secs(24 * 3600),
            "{:?}",
            policy.span()
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = RetryPolicy::default();
        for attempt in 1..=7u32 {
            let base = policy.delays[attempt as usize - 1].as_millis() as i64;
            for _ in 0..200 {
                let NextStep::RetryAt(at) = policy.after_failure(attempt, 0, None) else {
                    panic!("attempt {attempt} should be retried");
                };
                assert!(
                    at >= base * 8 / 10 && at <= base * 12 / 10,
                    "{at} vs {base}"
                );
            }
        }
    }

    #[test]
    fn last_attempt_exhausts_the_schedule() {
        assert_eq!(
            RetryPolicy::default().after_failure(8, 0, None),
            NextStep::Exhausted
        );
        assert_eq!(
            RetryPolicy::default().after_failure(8, 0, Some(Duration::from_secs(1))),
            NextStep::Exhausted
        );
    }

    #[test]
    fn retry_after_is_obeyed_within_bounds() {
        let policy = RetryPolicy::default();
        let at = |s| policy.after_failure(1, 1_000, Some(Duration::from_secs(s)));
        assert_eq!(at(120), NextStep::RetryAt(121_000));
        assert_eq!(at(0), NextStep::RetryAt(2_000));
        assert_eq!(at(100 * 3600), NextStep::RetryAt(1_000 + 6 * 3_600_000));
    }

    #[test]
    fn schedule_syntax() {
        let s: Schedule = "250ms, 5s,2m,1h,1d".parse().unwrap();
        assert_eq!(s.0[0], Duration::from_millis(250));
        assert_eq!(s.0[4], Duration::from_secs(86_400));
        assert_eq!(
            "5x".parse::<Schedule>().unwrap_err().rule,
            "unit must be ms, s, m, h or d"
        );
        assert_eq!(
            "s".parse::<Schedule>().unwrap_err().rule,
            "must start with a whole number"
        );
        assert_eq!(
            "5".parse::<Schedule>().unwrap_err().rule,
            "needs a unit: ms, s, m, h or d"
        );
    }
}
