//! API tokens in the state store (`api_tokens`): `svk_<id>_<secret>`, random, shown
//! once; kept as a per-token salt and the SHA-256 of salt and secret, with a role, a
//! name, an optional expiry and, once revoked, when. A token is looked up by its id and
//! its hash compared in constant time.
//!
//! Tokens made before ids existed (`svk_<48 hex>`, unsalted hashes) were moved into
//! `api_tokens` at open ([`crate::state`]) with an empty salt and go on working; the
//! first twelve digits of their hash are their id.

use crate::error::Result;
use crate::state::{Role, StateStore};
use rand::RngCore;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The only instances the token may read (tenant isolation); `None`: all of them.
    pub instances: Option<Vec<String>>,
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub role: Role,
    pub name: String,
    /// Refused from then on; valid forever if `None`.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Scope: only these instances (`None`: all).
    pub instances: Option<Vec<String>>,
}

impl TokenSpec {
    /// A token of `role` named `name`, for every instance, without expiry.
    pub fn new(role: Role, name: &str) -> Self {
        TokenSpec {
            role,
            name: name.to_string(),
            expires_at: None,
            instances: None,
        }
    }

    /// What is wrong with the spec, if anything: a blank name, a blank instance, or an
    /// admin scoped to instances (admins manage every token and the whole config, so
    /// scopes are for viewers and operators).
    pub fn problem(&self) -> Option<String> {
        if self.name.trim().is_empty() {
            return Some("the token's name must not be empty".into());
        }
        match &self.instances {
            Some(list) if list.is_empty() => {
                Some("a scope must list at least one instance (leave it out for all)".into())
            }
            Some(list) if list.iter().any(|i| i.trim().is_empty()) => {
                Some("the scope lists an empty instance name".into())
            }
            Some(_) if self.role == Role::Admin => Some(
                "admin tokens cannot be scoped to instances; scope a viewer or operator token"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(TokenInfo),
    Unknown,
    Expired(chrono::DateTime<chrono::Utc>),
    Revoked(chrono::DateTime<chrono::Utc>),
}

/// A new token: the secret to show once and what is kept.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Equal without an early exit, so timing says nothing about how much matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn time(s: Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

const COLUMNS: &str = "id, role, name, created_at, expires_at, revoked_at, instances";

fn info(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let role: String = r.get(1)?;
    Ok(TokenInfo {
        id: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        name: r.get(2)?,
        created_at: time(r.get(3)?).unwrap_or_default(),
        expires_at: time(r.get(4)?),
        revoked_at: time(r.get(5)?),
        instances: r
            .get::<_, Option<String>>(6)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl StateStore {
    /// Create a token for `role`, valid until `expires_at` if given; its secret is in
    /// the answer only.
    pub fn create_token(&self, spec: &TokenSpec) -> Result<NewToken> {
        let (id, salt, secret) = (random_hex(6), random_hex(16), random_hex(24));
        let info = TokenInfo {
            id: id.clone(),
            name: spec.name.clone(),
            role: spec.role,
            created_at: chrono::Utc::now(),
            expires_at: spec.expires_at,
            revoked_at: None,
            instances: spec.instances.clone(),
        };
        let instances = spec
            .instances
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        self.conn().execute(
            "INSERT INTO api_tokens (id, salt, hash, role, name, created_at, expires_at, instances) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                salt,
                sha256_hex(&[&salt, &secret]),
                spec.role.as_str(),
                spec.name,
                info.created_at.to_rfc3339(),
                spec.expires_at.map(|t| t.to_rfc3339()),
                instances,
            ],
        )?;
        Ok(NewToken {
            token: format!("svk_{id}_{secret}"),
            info,
        })
    }

    /// What `token` is: valid (with its role), unknown, expired or revoked.
    pub fn verify_token(&self, token: &str) -> Result<Verdict> {
        let (clause, key, secret) = match token
            .strip_prefix("svk_")
            .and_then(|rest| rest.split_once('_'))
        {
            Some((id, secret)) => ("id = ?1 AND salt <> ''", id.to_string(), Some(secret)),
            // A token from before ids: its unsalted hash is its key.
            None => ("hash = ?1 AND salt = ''", sha256_hex(&[token]), None),
        };
        let found = self
            .reader()
            .query_row(
                &format!("SELECT {COLUMNS}, salt, hash FROM api_tokens WHERE {clause}"),
                params![key],
                |r| Ok((info(r)?, r.get::<_, String>(7)?, r.get::<_, String>(8)?)),
            )
            .optional()?
            .filter(|(_, salt, hash)| secret.is_none_or(|s| same(&sha256_hex(&[salt, s]), hash)));
        let Some((info, _, _)) = found else {
            return Ok(Verdict::Unknown);
        };
        if let Some(at) = info.revoked_at {
            return Ok(Verdict::Revoked(at));
        }
        if let Some(at) = info.expires_at.filter(|t| *t <= chrono::Utc::now()) {
            return Ok(Verdict::Expired(at));
        }
        Ok(Verdict::Valid(info))
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([], info)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revoke the token `id` (kept, listed as revoked); None if there is no such token.
    pub fn revoke_token(&self, id: &str) -> Result<Option<TokenInfo>> {
        let now = chrono::Utc::now().to_rfc3339();
        self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )?;
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"),
                params![id],
                info,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn tokens_are_salted_hashed_expire_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let t = s
            .create_token(&TokenSpec::new(Role::Operator, "ci"))
            .unwrap();
        let Verdict::Valid(info) = s.verify_token(&t.token).unwrap() else {
            panic!("valid")
        };
        assert_eq!((info.role, info.name.as_str()), (Role::Operator, "ci"));
        let wrong = format!("{}x", &t.token[..t.token.len() - 1]);
        assert_eq!(s.verify_token(&wrong).unwrap(), Verdict::Unknown);
        assert_eq!(s.verify_token("svk_nope").unwrap(), Verdict::Unknown);
        let (salt, hash): (String, String) = s
            .conn()
            .query_row("SELECT salt, hash FROM api_tokens", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(!t.token.contains(&hash) && salt.len() == 32);

        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        let old = s
            .create_token(&TokenSpec {
                expires_at: Some(past),
                ..TokenSpec::new(Role::Admin, "old")
            })
            .unwrap();
        assert!(matches!(
            s.verify_token(&old.token).unwrap(),
            Verdict::Expired(_)
        ));
        s.revoke_token(&t.info.id).unwrap().unwrap();
        assert!(matches!(
            s.verify_token(&t.token).unwrap(),
            Verdict::Revoked(_)
        ));
        assert_eq!(s.revoke_token("nope").unwrap(), None);
        assert_eq!(s.tokens().unwrap().len(), 2);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn tokens_from_before_ids_go_on_working() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = format!("svk_{}", "ab".repeat(24));
        {
            let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
            conn.execute_batch(
                "CREATE TABLE tokens (hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO tokens VALUES (?1, 'viewer', 'old', '2026-01-01T00:00:00+00:00')",
                params![sha256_hex(&[&legacy])],
            )
            .unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        let Verdict::Valid(info) = s.verify_token(&legacy).unwrap() else {
            panic!("legacy token still valid")
        };
        assert_eq!((info.role, info.name.as_str()), (Role::Viewer, "old"));
        s.revoke_token(&info.id).unwrap();
        assert!(matches!(
            s.verify_token(&legacy).unwrap(),
            Verdict::Revoked(_)
        ));
    }
}
