-- Customers' sensitive fields encrypted at rest (issue 16, R9.9): name, email and attributes are kept as
-- AES-256-GCM ciphertexts sealed by the node (`store::fields`; the key never reaches the database). Exact
-- email lookups use email_index, a keyed blind index (HMAC-SHA256), never the address.
--
-- The plaintext columns stay for rows written before this version: a node encrypts them at start, in
-- batches, and clears them (name and email NULL, attributes '{}'); nothing writes them any more.
-- Substring search on names and emails and sorting by name are gone with the plaintext.

ALTER TABLE customers
    ADD COLUMN name_sealed       bytea,
    ADD COLUMN email_sealed      bytea,
    ADD COLUMN attributes_sealed bytea,
    ADD COLUMN email_index       bytea;

CREATE INDEX customers_org_email_index_idx ON customers (organization_id, email_index)
    WHERE email_index IS NOT NULL;

-- Rows still to encrypt at start.
CREATE INDEX customers_plaintext_idx ON customers (id)
    WHERE name IS NOT NULL OR email IS NOT NULL OR attributes <> '{}'::jsonb;

-- The data keys values are sealed with: a node whose keys open none of the canaries of the keys still
-- in use refuses to start, instead of failing on every read (a wrong INSIGHTS_DATA_KEY).
CREATE TABLE data_keys (
    id         bytea       PRIMARY KEY CHECK (length(id) = 4),
    canary     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
