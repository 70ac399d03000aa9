//! The only place with SQL for the auth service.

use common::Store;
use common::store::uuid_column;
use sqlx::Row;
use uuid::Uuid;

use crate::domain::Email;

pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
}

pub enum Inserted {
    Created,
    EmailTaken,
}

pub async fn insert_user(
    store: &Store,
    id: Uuid,
    email: &Email,
    password_hash: &str,
) -> Result<Inserted, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(email.as_str())
    .bind(password_hash)
    .bind(common::clock::now_millis())
    .execute(store.writer())
    .await;
    match result {
        Ok(_) => Ok(Inserted::Created),
        Err(err) if common::store::is_unique_violation(&err) => Ok(Inserted::EmailTaken),
        Err(err) => Err(err),
    }
}

pub async fn find_by_email(store: &Store, email: &Email) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query("SELECT id, email, password_hash FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(store.pool())
        .await?;
    row.map(|row| {
        Ok(User {
            id: uuid_column(&row, "id")?,
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
        })
    })
    .transpose()
}
