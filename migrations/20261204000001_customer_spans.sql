-- Per-customer figures over spans of days (issue 15; R5.9, R8.3): what makes a dashboard's distinct
-- customers and most negative customers cost O(customers × log(days)) instead of O(customer-days).
--
-- customer_daily holds a row per (day, channel, segment, customer); a 30-day dashboard of a tenant whose
-- 20,000 customers are active every day on four channels adds up 2.4 million of them. customer_spans holds
-- the same figures across channels and segments, per customer, for aligned spans of 1, 4, 16, 64, 256 and
-- 1,024 days (from the rollups' origin, 2000-01-03). Any range of whole days is covered exactly once by at
-- most 11 runs of spans (at most three of each width below the widest at either end, then a run of the
-- widest), so a month reads about five rows per customer.
--
-- It is derived from customer_daily by statement triggers over the transition tables, inside the fold's
-- own transaction: exact whenever customer_daily is, whichever node (or node version) folds. A change that
-- nets to zero per customer and span (a segment moving, an enrichment) writes nothing. Filters by channel
-- or segment still read customer_daily, which keeps those dimensions.

CREATE TABLE customer_spans (
    organization_id uuid             NOT NULL,
    width           smallint         NOT NULL, -- days: 1, 4, 16, 64, 256 or 1024
    start           timestamptz      NOT NULL, -- date_bin(width days, day, origin)
    customer_id     uuid             NOT NULL,
    n               bigint           NOT NULL,
    scored          bigint           NOT NULL,
    score_sum       double precision NOT NULL,
    negative        bigint           NOT NULL,
    -- Covering: a dashboard reads a span's customers from the index alone (index-only scans), since
    -- its rows are scattered over the heap in the order they were first touched. Updates are therefore
    -- not HOT; only the spans holding recent days are updated, and a range reads only closed spans.
    PRIMARY KEY (organization_id, width, start, customer_id) INCLUDE (n, scored, score_sum, negative)
);

-- Adds the net change of one statement on customer_daily to every span holding its days. (Dynamic SQL: a
-- statement naming a transition table its trigger lacks would not even plan.)
CREATE FUNCTION customer_spans_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT organization_id, day, customer_id, n, scored, score_sum, negative FROM new_rows'
        WHEN 'UPDATE' THEN 'SELECT organization_id, day, customer_id, n, scored, score_sum, negative FROM new_rows
                            UNION ALL
                            SELECT organization_id, day, customer_id, -n, -scored, -score_sum, -negative FROM old_rows'
        ELSE 'SELECT organization_id, day, customer_id, -n, -scored, -score_sum, -negative FROM old_rows'
    END;
BEGIN
    EXECUTE format($sql$
        INSERT INTO customer_spans AS r (organization_id, width, start, customer_id, n, scored, score_sum, negative)
        SELECT c.organization_id, w.width,
               date_bin(make_interval(days => w.width), c.day, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               c.customer_id, sum(c.n), sum(c.scored), sum(c.score_sum), sum(c.negative)
        FROM (%s) AS c (organization_id, day, customer_id, n, scored, score_sum, negative)
        CROSS JOIN (VALUES (1::smallint), (4::smallint), (16::smallint), (64::smallint), (256::smallint),
                           (1024::smallint)) AS w (width)
        GROUP BY 1, 2, 3, 4
        HAVING sum(c.n) <> 0 OR sum(c.scored) <> 0 OR sum(c.negative) <> 0 OR sum(c.score_sum) <> 0
        ON CONFLICT (organization_id, width, start, customer_id) DO UPDATE SET
            n = r.n + excluded.n, scored = r.scored + excluded.scored,
            score_sum = r.score_sum + excluded.score_sum, negative = r.negative + excluded.negative
        $sql$, changes);
    RETURN NULL;
END
$$;

-- No fold runs while the spans are filled from what customer_daily holds now (the fold's lock, held to
-- the end of this migration's transaction), so no change is counted twice or missed.
SELECT pg_advisory_xact_lock(1229869897, 15);

INSERT INTO customer_spans (organization_id, width, start, customer_id, n, scored, score_sum, negative)
SELECT organization_id, 1, day, customer_id, sum(n), sum(scored), sum(score_sum), sum(negative)
FROM customer_daily GROUP BY organization_id, day, customer_id;

-- Each width from the one below it: a quarter of the rows at each step.
DO $$
DECLARE
    w smallint;
BEGIN
    FOREACH w IN ARRAY ARRAY[4, 16, 64, 256, 1024]::smallint[] LOOP
        INSERT INTO customer_spans (organization_id, width, start, customer_id, n, scored, score_sum, negative)
        SELECT organization_id, w, date_bin(make_interval(days => w), start, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               customer_id, sum(n), sum(scored), sum(score_sum), sum(negative)
        FROM customer_spans WHERE width = w / 4
        GROUP BY organization_id, 3, customer_id;
    END LOOP;
END
$$;

-- Transition tables need one trigger per event. The DELETE one matters only for rows deleted by hand:
-- the fold deletes customer_daily rows only once their figures are zero.
CREATE TRIGGER customer_spans_insert AFTER INSERT ON customer_daily
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_spans_capture();
CREATE TRIGGER customer_spans_update AFTER UPDATE ON customer_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_spans_capture();
CREATE TRIGGER customer_spans_delete AFTER DELETE ON customer_daily
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_spans_capture();
