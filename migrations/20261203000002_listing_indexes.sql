-- Listing plans at millions of interactions in one organization (issue 15, R5.11).
--
-- The listing sorts by score `DESC NULLS LAST` or `ASC NULLS FIRST` (unscored rows after the scored ones
-- when descending). An index in the default order (`ASC NULLS LAST`) serves neither, so every sort by
-- sentiment sorted all the organization's rows; with `NULLS FIRST` a forward scan serves ascending and a
-- backward scan descending. Channel and segment ride along (INCLUDE), so the bounded count of a sentiment
-- range combined with them (R5.12) reads only the index, not a heap row per candidate.
DROP INDEX customer_interactions_org_score_idx;
CREATE INDEX customer_interactions_org_score_idx
    ON customer_interactions (organization_id, sentiment_score NULLS FIRST, id) INCLUDE (channel, segment);
