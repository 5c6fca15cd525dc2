//! Organizations (tenants).

use sqlx::PgPool;

use crate::domain::{Email, OrganizationId, PersonName, Role, User};
use crate::error::Error;

/// Creates an organization and its first admin in one transaction.
pub async fn create_with_admin(
    pool: &PgPool,
    name: &str,
    admin_email: &Email,
    admin_name: &PersonName,
    password_hash: &str,
) -> Result<(OrganizationId, User), Error> {
    let mut tx = pool.begin().await?;
    let org = sqlx::query_scalar!(
        r#"INSERT INTO organizations (name) VALUES ($1) RETURNING id AS "id: OrganizationId""#,
        name.trim()
    )
    .fetch_one(&mut *tx)
    .await?;
    let admin =
        super::users::create(&mut tx, org, admin_email, admin_name, password_hash, Role::Admin).await?;
    tx.commit().await?;
    Ok((org, admin))
}
