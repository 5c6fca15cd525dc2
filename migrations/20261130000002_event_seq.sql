-- Event numbering that survives restarts (R6.7, R6.8). An organization's actor numbers its live events
-- (interaction.created, sentiment.scored, pattern.detected) from 1 and keeps the last ones for replay.
-- It reserves numbers in blocks: this column is the highest number any actor of the organization may
-- have handed out. A restarted actor continues above it, so a client resuming with a number from before
-- the restart finds it older than the buffer and is told to resync, never given other events under old
-- numbers.
ALTER TABLE organizations
    ADD COLUMN event_seq_reserved bigint NOT NULL DEFAULT 0 CHECK (event_seq_reserved >= 0);
