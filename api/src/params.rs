//! Query-string parsing with errors that name the parameter.

use crate::ApiError;
use std::collections::HashMap;

pub struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Refuse parameters the endpoint does not know, so typos do not silently widen a query.
    pub fn new(map: HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
        if let Some(bad) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{bad}`; allowed: {}",
                allowed.join(", ")
            )));
        }
        Ok(Params { map })
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.map.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A time as RFC 3339 (`2026-01-01T00:00:00Z`) or integer nanoseconds since the epoch.
    pub fn time_ns(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        if let Ok(ns) = v.parse::<i64>() {
            return Ok(Some(ns));
        }
        chrono::DateTime::parse_from_rfc3339(&v)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{name}` must be an RFC 3339 time or nanoseconds since the epoch, got `{v}`"
                ))
            })
    }

    pub fn usize(&self, name: &str, max: usize) -> Result<Option<usize>, ApiError> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        match v.parse::<usize>() {
            Ok(n) if n >= 1 && n <= max => Ok(Some(n)),
            _ => Err(ApiError::BadRequest(format!(
                "`{name}` must be a whole number from 1 to {max}, got `{v}`"
            ))),
        }
    }

    /// A series id: 16 hex digits as `/api/v1/series` lists them.
    pub fn series_id(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        u64::from_str_radix(&v, 16)
            .ok()
            .filter(|_| v.len() <= 16)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{name}` must be a series id (16 hex digits), got `{v}`"
                ))
            })
    }

    /// A page's `next_cursor` given back as `name`, read by `decode`.
    pub fn cursor<T>(
        &self,
        name: &str,
        decode: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(c) = self.string(name) else {
            return Ok(None);
        };
        decode(&c).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{name}` must be a `next_cursor` from an earlier page, got `{c}`"
            ))
        })
    }

    pub fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.string(name) {
            Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::BadRequest(format!(
                "`{name}` must be one of {}, got `{v}`",
                allowed.join(", ")
            ))),
            v => Ok(v),
        }
    }
}
