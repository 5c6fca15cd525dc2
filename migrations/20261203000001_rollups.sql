-- Rollups of interactions maintained as data arrives (issue 15; R5, R8.6, R8.8, R14).
--
-- The shape is a summing view with real-time aggregation, as ClickHouse's SummingMergeTree or
-- TimescaleDB's continuous aggregates do it:
--
-- * Every statement that inserts, updates or deletes interactions appends its net change, grouped per
--   (organization, hour, channel, segment, customer), to interaction_deltas, in the same transaction (a
--   statement trigger over the transition tables). Appending never updates a shared row, so concurrent
--   writers of one organization never wait on each other, and a delta commits or rolls back with its write.
-- * A compactor (any node; one at a time through an advisory lock) moves deltas into the rollups in one
--   transaction: hourly and daily buckets per (organization, channel, segment), and daily figures per
--   customer for distinct customers and the most negative customers. A crash loses nothing: the deltas
--   stay until the transaction that folded them commits.
-- * Readers add the rollups, the deltas not folded yet and the raw rows of the partial hours at the edges
--   of their range, in one snapshot: exact at any moment, and O(buckets) rather than O(interactions).
--
-- Per bucket: interactions (n), scored ones, the sum of their scores, the three labels, and the histogram
-- of scores in ten buckets of 0.2 (h1 = [-1, -0.8) … h10 = [0.8, 1]). Rows whose counts fall to zero
-- (their interactions deleted) are deleted by the fold that brings them there. No foreign keys: a deleted
-- organization's or customer's rows get negative deltas from the cascade and vanish on the next fold.
-- The rollups leave room in each page (fillfactor 70) and index no column a fold changes, so a fold's
-- updates are HOT: the same row updated every second does not bloat the table or its index.

CREATE TABLE interaction_deltas (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid                NOT NULL,
    hour            timestamptz         NOT NULL,
    channel         interaction_channel NOT NULL,
    segment         text,
    customer_id     uuid                NOT NULL,
    n          bigint           NOT NULL,
    scored     bigint           NOT NULL,
    score_sum  double precision NOT NULL,
    positive   bigint           NOT NULL,
    negative   bigint           NOT NULL,
    neutral    bigint           NOT NULL,
    h1         bigint           NOT NULL,
    h2         bigint           NOT NULL,
    h3         bigint           NOT NULL,
    h4         bigint           NOT NULL,
    h5         bigint           NOT NULL,
    h6         bigint           NOT NULL,
    h7         bigint           NOT NULL,
    h8         bigint           NOT NULL,
    h9         bigint           NOT NULL,
    h10        bigint           NOT NULL
);
CREATE INDEX interaction_deltas_org_hour_idx ON interaction_deltas (organization_id, hour);

CREATE TABLE interaction_hourly (
    organization_id uuid                NOT NULL,
    hour            timestamptz         NOT NULL,
    channel         interaction_channel NOT NULL,
    segment         text,
    n          bigint           NOT NULL,
    scored     bigint           NOT NULL,
    score_sum  double precision NOT NULL,
    positive   bigint           NOT NULL,
    negative   bigint           NOT NULL,
    neutral    bigint           NOT NULL,
    h1         bigint           NOT NULL,
    h2         bigint           NOT NULL,
    h3         bigint           NOT NULL,
    h4         bigint           NOT NULL,
    h5         bigint           NOT NULL,
    h6         bigint           NOT NULL,
    h7         bigint           NOT NULL,
    h8         bigint           NOT NULL,
    h9         bigint           NOT NULL,
    h10        bigint           NOT NULL,
    CONSTRAINT interaction_hourly_key UNIQUE NULLS NOT DISTINCT (organization_id, hour, channel, segment)
) WITH (fillfactor = 70);

CREATE TABLE interaction_daily (
    organization_id uuid                NOT NULL,
    day             timestamptz         NOT NULL,
    channel         interaction_channel NOT NULL,
    segment         text,
    n          bigint           NOT NULL,
    scored     bigint           NOT NULL,
    score_sum  double precision NOT NULL,
    positive   bigint           NOT NULL,
    negative   bigint           NOT NULL,
    neutral    bigint           NOT NULL,
    h1         bigint           NOT NULL,
    h2         bigint           NOT NULL,
    h3         bigint           NOT NULL,
    h4         bigint           NOT NULL,
    h5         bigint           NOT NULL,
    h6         bigint           NOT NULL,
    h7         bigint           NOT NULL,
    h8         bigint           NOT NULL,
    h9         bigint           NOT NULL,
    h10        bigint           NOT NULL,
    CONSTRAINT interaction_daily_key UNIQUE NULLS NOT DISTINCT (organization_id, day, channel, segment)
) WITH (fillfactor = 70);

CREATE TABLE customer_daily (
    organization_id uuid                NOT NULL,
    day             timestamptz         NOT NULL,
    channel         interaction_channel NOT NULL,
    segment         text,
    customer_id     uuid                NOT NULL,
    n               bigint              NOT NULL,
    scored          bigint              NOT NULL,
    score_sum       double precision    NOT NULL,
    negative        bigint              NOT NULL,
    CONSTRAINT customer_daily_key UNIQUE NULLS NOT DISTINCT (organization_id, day, channel, segment, customer_id)
) WITH (fillfactor = 70);

-- The net change of one statement. An UPDATE that changes no rolled-up column nets to zero and appends
-- nothing (the HAVING), so touching updated_at or the enrichment costs no delta.
CREATE FUNCTION interaction_deltas_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO interaction_deltas (organization_id, hour, channel, segment, customer_id, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
        SELECT organization_id, date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id,
               count(*),
               count(sentiment_score),
               coalesce(sum(sentiment_score::float8), 0),
               count(*) FILTER (WHERE sentiment_label = 'positive'),
               count(*) FILTER (WHERE sentiment_label = 'negative'),
               count(*) FILTER (WHERE sentiment_label = 'neutral'),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)
        FROM new_rows GROUP BY 1, 2, 3, 4, 5;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO interaction_deltas (organization_id, hour, channel, segment, customer_id, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
        SELECT organization_id, date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id,
               -count(*),
               -count(sentiment_score),
               -coalesce(sum(sentiment_score::float8), 0),
               -count(*) FILTER (WHERE sentiment_label = 'positive'),
               -count(*) FILTER (WHERE sentiment_label = 'negative'),
               -count(*) FILTER (WHERE sentiment_label = 'neutral'),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)
        FROM old_rows GROUP BY 1, 2, 3, 4, 5;
    ELSE
        INSERT INTO interaction_deltas (organization_id, hour, channel, segment, customer_id, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
        SELECT organization_id, hour, channel, segment, customer_id, sum(n), sum(scored), sum(score_sum), sum(positive), sum(negative), sum(neutral), sum(h1), sum(h2), sum(h3), sum(h4), sum(h5), sum(h6), sum(h7), sum(h8), sum(h9), sum(h10)
        FROM (SELECT organization_id, date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id,
               count(*),
               count(sentiment_score),
               coalesce(sum(sentiment_score::float8), 0),
               count(*) FILTER (WHERE sentiment_label = 'positive'),
               count(*) FILTER (WHERE sentiment_label = 'negative'),
               count(*) FILTER (WHERE sentiment_label = 'neutral'),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)
        FROM new_rows GROUP BY 1, 2, 3, 4, 5
              UNION ALL
              SELECT organization_id, date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id,
               -count(*),
               -count(sentiment_score),
               -coalesce(sum(sentiment_score::float8), 0),
               -count(*) FILTER (WHERE sentiment_label = 'positive'),
               -count(*) FILTER (WHERE sentiment_label = 'negative'),
               -count(*) FILTER (WHERE sentiment_label = 'neutral'),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9),
               -count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)
        FROM old_rows GROUP BY 1, 2, 3, 4, 5) AS c (organization_id, hour, channel, segment, customer_id, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(n) <> 0 OR sum(scored) <> 0 OR sum(score_sum) <> 0 OR sum(positive) <> 0 OR sum(negative) <> 0 OR sum(neutral) <> 0 OR sum(h1) <> 0 OR sum(h2) <> 0 OR sum(h3) <> 0 OR sum(h4) <> 0 OR sum(h5) <> 0 OR sum(h6) <> 0 OR sum(h7) <> 0 OR sum(h8) <> 0 OR sum(h9) <> 0 OR sum(h10) <> 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER customer_interactions_deltas_insert AFTER INSERT ON customer_interactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION interaction_deltas_capture();
CREATE TRIGGER customer_interactions_deltas_update AFTER UPDATE ON customer_interactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION interaction_deltas_capture();
CREATE TRIGGER customer_interactions_deltas_delete AFTER DELETE ON customer_interactions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION interaction_deltas_capture();

-- The rows stored before this migration become deltas, folded by the first compaction.
INSERT INTO interaction_deltas (organization_id, hour, channel, segment, customer_id, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
SELECT organization_id, date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id,
               count(*),
               count(sentiment_score),
               coalesce(sum(sentiment_score::float8), 0),
               count(*) FILTER (WHERE sentiment_label = 'positive'),
               count(*) FILTER (WHERE sentiment_label = 'negative'),
               count(*) FILTER (WHERE sentiment_label = 'neutral'),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9),
               count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)
        FROM customer_interactions GROUP BY 1, 2, 3, 4, 5;

