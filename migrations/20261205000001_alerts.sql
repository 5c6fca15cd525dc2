-- Alerts (issue 17; R11.11, R11.12, R14.10, R9.15): what the nodes find by watching their own metrics
-- (`system` alerts: latency, errors, cache hit rate, security events, the model, the pools, the cluster)
-- and, later, what they find in an organization's data (`insight` alerts). One row per condition while it
-- lasts: a condition that holds at every evaluation stays one firing row (the partial unique index on its
-- fingerprint), resolved once it no longer holds. A system alert names no organization and is shown to
-- every admin.

CREATE TABLE alerts (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        REFERENCES organizations (id) ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('system', 'insight')),
    rule            text        NOT NULL CHECK (length(rule) BETWEEN 1 AND 100),
    severity        text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state           text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    -- What makes two evaluations the same condition: kind, rule, its subject (a cache, a pool, a
    -- channel), and the node (system) or organization (insight).
    fingerprint     text        NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 500),
    summary         text        NOT NULL,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    node            text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (kind = 'system' OR organization_id IS NOT NULL)
);

CREATE UNIQUE INDEX alerts_one_firing_per_condition ON alerts (fingerprint) WHERE state = 'firing';
-- Listings: an organization's alerts, and the system alerts every admin sees, newest first.
CREATE INDEX alerts_organization_started_idx ON alerts (organization_id, started_at DESC, id DESC);
CREATE INDEX alerts_system_started_idx ON alerts (started_at DESC, id DESC) WHERE organization_id IS NULL;
CREATE INDEX alerts_node_firing_idx ON alerts (node) WHERE state = 'firing';

CREATE TRIGGER alerts_updated_at BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
