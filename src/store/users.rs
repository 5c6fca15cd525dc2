//! Users of an organization.

use sqlx::PgPool;

use crate::domain::{Email, OrganizationId, PersonName, Role, User, UserId};
use crate::error::{Error, unique_violation};

/// What login needs to check a password.
#[derive(Debug)]
pub struct Credentials {
    pub id: UserId,
    pub organization_id: OrganizationId,
    pub role: Role,
    pub password_hash: String,
}

/// The changes a PATCH may carry; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub name: Option<PersonName>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

fn email_conflict(e: sqlx::Error) -> Error {
    if unique_violation(&e).as_deref() == Some("users_email_key") {
        return Error::Conflict("a user with this email already exists".to_owned());
    }
    e.into()
}

/// Finds the credentials of the user with this (normalized) email.
pub async fn credentials_by_email(pool: &PgPool, email: &Email) -> Result<Option<Credentials>, Error> {
    let row = sqlx::query_as!(
        Credentials,
        r#"SELECT id AS "id: UserId", organization_id AS "organization_id: OrganizationId",
                  role AS "role: Role", password_hash
           FROM users WHERE email = $1"#,
        email.as_str()
    )
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Returns the password hash of a user.
pub async fn password_hash(pool: &PgPool, id: UserId) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", id.as_uuid())
            .fetch_optional(pool)
            .await?,
    )
}

/// Inserts a user; a taken email is a 409.
pub async fn create(
    conn: &mut sqlx::PgConnection,
    org: OrganizationId,
    email: &Email,
    name: &PersonName,
    password_hash: &str,
    role: Role,
) -> Result<User, Error> {
    sqlx::query_as!(
        User,
        r#"INSERT INTO users (organization_id, email, name, password_hash, role)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id AS "id: UserId", email, name, role AS "role: Role",
                     organization_id AS "organization_id: OrganizationId", last_login_at, created_at, updated_at"#,
        org.as_uuid(),
        email.as_str(),
        name.as_str(),
        password_hash,
        role as Role
    )
    .fetch_one(conn)
    .await
    .map_err(email_conflict)
}

/// Returns a user of this organization.
pub async fn get(pool: &PgPool, org: OrganizationId, id: UserId) -> Result<Option<User>, Error> {
    Ok(sqlx::query_as!(
        User,
        r#"SELECT id AS "id: UserId", email, name, role AS "role: Role",
                  organization_id AS "organization_id: OrganizationId", last_login_at, created_at, updated_at
           FROM users WHERE organization_id = $1 AND id = $2"#,
        org.as_uuid(),
        id.as_uuid()
    )
    .fetch_optional(pool)
    .await?)
}

/// Returns a page of the organization's users, oldest first, and the total count.
pub async fn list(
    pool: &PgPool,
    org: OrganizationId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), Error> {
    let users = sqlx::query_as!(
        User,
        r#"SELECT id AS "id: UserId", email, name, role AS "role: Role",
                  organization_id AS "organization_id: OrganizationId", last_login_at, created_at, updated_at
           FROM users WHERE organization_id = $1
           ORDER BY created_at, id LIMIT $2 OFFSET $3"#,
        org.as_uuid(),
        limit,
        offset
    )
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM users WHERE organization_id = $1"#,
        org.as_uuid()
    )
    .fetch_one(pool)
    .await?;
    Ok((users, total))
}

/// Records a successful login (R1.7).
pub async fn touch_last_login(conn: &mut sqlx::PgConnection, id: UserId) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE users SET last_login_at = now() WHERE id = $1",
        id.as_uuid()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts the organization's admins while locking them, so two concurrent demotions cannot both pass
/// the "at least one admin" check.
async fn lock_admins(tx: &mut sqlx::PgConnection, org: OrganizationId) -> Result<Vec<UserId>, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: UserId" FROM users WHERE organization_id = $1 AND role = 'admin' FOR UPDATE"#,
        org.as_uuid()
    )
    .fetch_all(tx)
    .await?)
}

/// Applies a patch inside `tx`; refuses to leave the organization without an admin.
pub async fn update(
    tx: &mut sqlx::PgConnection,
    org: OrganizationId,
    id: UserId,
    patch: &UserPatch,
) -> Result<Option<User>, Error> {
    if patch.role.is_some_and(|r| r != Role::Admin) {
        let admins = lock_admins(tx, org).await?;
        if admins == [id] {
            return Err(Error::Conflict(
                "the organization must keep at least one admin".to_owned(),
            ));
        }
    }
    Ok(sqlx::query_as!(
        User,
        r#"UPDATE users SET
               name = COALESCE($3, name),
               role = COALESCE($4, role),
               password_hash = COALESCE($5, password_hash)
           WHERE organization_id = $1 AND id = $2
           RETURNING id AS "id: UserId", email, name, role AS "role: Role",
                     organization_id AS "organization_id: OrganizationId", last_login_at, created_at, updated_at"#,
        org.as_uuid(),
        id.as_uuid(),
        patch.name.as_ref().map(PersonName::as_str),
        patch.role as Option<Role>,
        patch.password_hash.as_deref()
    )
    .fetch_optional(tx)
    .await?)
}

/// Deletes a user inside `tx` (their sessions go with them); refuses to delete the last admin.
pub async fn delete(tx: &mut sqlx::PgConnection, org: OrganizationId, id: UserId) -> Result<bool, Error> {
    let admins = lock_admins(tx, org).await?;
    if admins == [id] {
        return Err(Error::Conflict(
            "the organization must keep at least one admin".to_owned(),
        ));
    }
    let done = sqlx::query!(
        "DELETE FROM users WHERE organization_id = $1 AND id = $2",
        org.as_uuid(),
        id.as_uuid()
    )
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
