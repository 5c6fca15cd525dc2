-- Each API key may carry its own request quota per rate-limit window (R13): machine ingestion is not
-- held to a person's 100 requests a minute. NULL means the deployment's default
-- (INSIGHTS_RATE_LIMIT_API_KEY_PER_MIN). A key's quota is fixed when it is created.
ALTER TABLE api_keys
    ADD COLUMN rate_limit_per_minute integer
        CHECK (rate_limit_per_minute IS NULL OR rate_limit_per_minute BETWEEN 1 AND 1000000);
