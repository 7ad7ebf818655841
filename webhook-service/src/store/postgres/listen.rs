//! [`Store::changes`](crate::store::Store::changes) for PostgreSQL: LISTEN/NOTIFY.
//!
//! Writers call `pg_notify('sdserve_changes', payload)` inside their transaction; PostgreSQL
//! delivers the notification to every listening session when (and only if) it commits. Each
//! store keeps one dedicated connection (not from the pool, which would recycle it) that
//! LISTENs on the channel; a task drives that connection with
//! [`tokio_postgres::Connection::poll_message`] and forwards each notification into the store's
//! broadcast channel. Payloads: `queued` ([`StoreChange::JobQueued`]), `job:<id>`
//! ([`StoreChange::Job`]) and `delivery` ([`StoreChange::DeliveryDue`]).
//!
//! Notifications sent while the listening connection is down are lost, so when it drops the
//! task reconnects with backoff and then announces `JobQueued` and `DeliveryDue` once: whoever
//! waits re-reads the store instead of waiting for a notification that will never come.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::{StoreChange, StoreError};

/// The notification channel every replica listens on.
pub(super) const CHANNEL: &str = "sdserve_changes";
/// Payload announcing a job queued or put back in the queue.
pub(super) const JOB_QUEUED: &str = "queued";
/// Payload announcing deliveries that became due.
pub(super) const DELIVERY_DUE: &str = "delivery";
/// Prefix of the payload announcing a change to one job.
const JOB_PREFIX: &str = "job:";

/// First wait before reconnecting a dropped listening connection; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The payload announcing a change to job `id`.
pub(super) fn job_payload(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// Queues `payload` on [`CHANNEL`] in the transaction of `client` (sent at commit).
pub(super) async fn notify(client: &impl GenericClient, payload: &str) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached("SELECT pg_notify('sdserve_changes', $1)")
        .await?;
    client.execute(&stmt, &[&payload]).await?;
    Ok(())
}

/// The change a payload announces; None for a payload this build does not know (a newer
/// replica's), which is ignored.
fn parse(payload: &str) -> Option<StoreChange> {
    match payload {
        JOB_QUEUED => Some(StoreChange::JobQueued),
        DELIVERY_DUE => Some(StoreChange::DeliveryDue),
        other => other
            .strip_prefix(JOB_PREFIX)
            .map(|id| StoreChange::Job(id.to_owned())),
    }
}

/// The listening task; dropping this stops it and closes its connection.
#[derive(Debug)]
pub(super) struct Listener {
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One listening connection: the client (kept so the connection stays open) and the task
/// driving the connection, which ends when the connection does.
struct Session {
    _client: tokio_postgres::Client,
    forward: JoinHandle<Option<String>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// Opens the listening connection (failing if it cannot: a store that starts must hear
/// changes from the start) and spawns the task that keeps it open.
pub(super) async fn start(
    config: tokio_postgres::Config,
    sender: broadcast::Sender<StoreChange>,
) -> Result<Listener, StoreError> {
    let session = listen(&config, &sender).await?;
    Ok(Listener {
        task: tokio::spawn(supervise(config, sender, session)),
    })
}

/// Connects, starts forwarding notifications and runs `LISTEN`.
async fn listen(
    config: &tokio_postgres::Config,
    sender: &broadcast::Sender<StoreChange>,
) -> Result<Session, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let sender = sender.clone();
    // The connection does nothing (not even run LISTEN) unless polled: this task polls it
    // and returns why it closed (None: closed cleanly).
    let forward = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Some(change) = parse(n.payload()) {
                        // No receiver right now is fine: nobody is waiting.
                        let _ = sender.send(change);
                    }
                }
                Ok(_) => {} // a notice
                Err(e) => return Some(super::error::PgError::from(e).to_string()),
            }
        }
        None
    });
    let session = Session {
        _client: client,
        forward,
    };
    session
        ._client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await?;
    Ok(session)
}

/// Waits for the session's connection to end, then reconnects with backoff, announcing after
/// each reconnection what may have been missed. Runs until the store drops its [`Listener`].
async fn supervise(
    config: tokio_postgres::Config,
    sender: broadcast::Sender<StoreChange>,
    mut session: Session,
) {
    loop {
        let why = match (&mut session.forward).await {
            Ok(Some(error)) => error,
            Ok(None) => "the server closed the connection".to_owned(),
            Err(e) => format!("its task ended: {e}"),
        };
        tracing::warn!(reason = %why, "the store's LISTEN connection dropped; reconnecting");
        let mut backoff = FIRST_BACKOFF;
        session = loop {
            tokio::time::sleep(backoff).await;
            match listen(&config, &sender).await {
                Ok(session) => break session,
                Err(e) => {
                    tracing::warn!(
                        error = %super::error::PgError::from(e),
                        retry_in = ?backoff,
                        "cannot reconnect the store's LISTEN connection"
                    );
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!("the store's LISTEN connection is back");
        let _ = sender.send(StoreChange::JobQueued);
        let _ = sender.send(StoreChange::DeliveryDue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(parse("queued"), Some(StoreChange::JobQueued));
        assert_eq!(parse("delivery"), Some(StoreChange::DeliveryDue));
        assert_eq!(
            parse(&job_payload("j:1")),
            Some(StoreChange::Job("j:1".into()))
        );
        assert_eq!(parse("something-newer"), None);
    }
}
