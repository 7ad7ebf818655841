-- Version 5: a dispatched job is held by one replica (`claimed_by`) until its lease runs out
-- (`lease_until`, ms since the epoch); the dispatcher renews the lease while it runs the job,
-- and a job whose lease ran out can be taken by another dispatcher.
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
