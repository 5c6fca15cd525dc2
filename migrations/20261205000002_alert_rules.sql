-- Insight alert rules (issue 18): each organization's admins adjust how its data is watched (window,
-- baseline, sensitivity, absolute drop, volume floor, dimensions). No row: the defaults. The rules are a
-- JSON object validated by the API (domain::insight::InsightRules), so a new knob needs no migration.
CREATE TABLE alert_rules (
    organization_id uuid        PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    rules           jsonb       NOT NULL CHECK (jsonb_typeof(rules) = 'object'),
    updated_by      uuid        REFERENCES users (id) ON DELETE SET NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
