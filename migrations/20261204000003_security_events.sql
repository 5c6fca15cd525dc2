-- Security events (issue 16; R9.14, R9.15, R11.3): the auth trail grows into every event an operator or an
-- alert rule watches for. Besides logins, throttles, logouts, password changes and refresh-token reuse:
-- refused refresh tokens, permission denials, rate-limit blocks and decryption failures, each with the
-- route, the IP, and the user or API key when known. The table keeps its name (older nodes write to it).

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_succeeded', 'login_failed', 'login_throttled', 'logout', 'password_changed', 'refresh_reused',
    'refresh_invalid', 'permission_denied', 'rate_limited', 'decryption_failed'));
ALTER TABLE auth_events
    ADD COLUMN api_key_id uuid,
    ADD COLUMN route      text,
    ADD COLUMN detail     text;
