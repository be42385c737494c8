-- Retention finds the old events as a prefix of seq, walking the primary key: the index on
-- at_ms cost an index write on every event for an hourly job.
DROP INDEX event_outbox_by_time;
