\timing on
BEGIN;
CREATE TEMP TABLE x AS SELECT organization_id, day, channel, segment, customer_id FROM customer_daily WHERE day = (SELECT max(day) - interval '1 day' FROM customer_daily) LIMIT 20000;
UPDATE customer_daily c SET n = c.n + 1, scored = c.scored + 1 FROM x WHERE c.organization_id = x.organization_id AND c.day = x.day AND c.channel = x.channel AND c.segment IS NOT DISTINCT FROM x.segment AND c.customer_id = x.customer_id;
ROLLBACK;
BEGIN;
CREATE TEMP TABLE x AS SELECT organization_id, day, channel, segment, customer_id FROM customer_daily WHERE day = (SELECT max(day) - interval '1 day' FROM customer_daily) LIMIT 20000;
ALTER TABLE customer_daily DISABLE TRIGGER customer_spans_update;
UPDATE customer_daily c SET n = c.n + 1, scored = c.scored + 1 FROM x WHERE c.organization_id = x.organization_id AND c.day = x.day AND c.channel = x.channel AND c.segment IS NOT DISTINCT FROM x.segment AND c.customer_id = x.customer_id;
ROLLBACK;
