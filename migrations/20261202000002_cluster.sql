-- Ownership of organizations across nodes (../shared/CLUSTER.md §4). PostgreSQL decides who owns an
-- organization, not the actor mesh: each node heartbeats its row, an organization's lease is valid while
-- its owner's heartbeat is fresh and its incarnation unchanged, and the epoch is the fencing token every
-- owner write checks (an old owner's write after a takeover rolls back).

-- One row per node name; the incarnation goes up on every start, so a restarted node's old leases are
-- void at once and a second process started under the same name fences the first.
CREATE TABLE cluster_nodes (
    name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    incarnation  bigint      NOT NULL CHECK (incarnation > 0),
    address      text        NOT NULL,
    roles        text[]      NOT NULL DEFAULT '{api,actors,ml}',
    state        text        NOT NULL CHECK (state IN ('up', 'leaving', 'down')),
    config_hash  text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- The current owner of each organization. owner_node '' means nobody yet; released means free to take
-- (never owned, or handed off).
CREATE TABLE org_ownership (
    organization_id   uuid        PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    owner_node        text        NOT NULL,
    owner_incarnation bigint      NOT NULL,
    epoch             bigint      NOT NULL CHECK (epoch >= 0),
    released          boolean     NOT NULL DEFAULT true,
    acquired_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX org_ownership_owner_idx ON org_ownership (owner_node);

-- Every change of owner, append-only: the tests prove single ownership from it, operators read
-- takeovers from it.
CREATE TABLE org_ownership_log (
    organization_id       uuid        NOT NULL,
    epoch                 bigint      NOT NULL,
    owner_node            text        NOT NULL,
    owner_incarnation     bigint      NOT NULL,
    reason                text        NOT NULL CHECK (reason IN ('first', 'takeover', 'handoff', 'restart')),
    previous_node         text,
    previous_heartbeat_at timestamptz,
    acquired_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (organization_id, epoch)
);
