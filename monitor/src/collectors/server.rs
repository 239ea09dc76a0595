//! `server.sql`: version and edition, read once per connection of an instance.

use crate::cells::Cells;
use sqlvigil_model::live::ServerInfo;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("server.sql");

pub(crate) fn parse(rows: &[Row]) -> ServerInfo {
    let Some(row) = rows.first() else {
        return ServerInfo::default();
    };
    let c = Cells(row);
    let version = c.text("product_version").unwrap_or_default();
    ServerInfo {
        server_name: c.text("server_name").unwrap_or_default(),
        major_version: version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        version,
        edition: c.text("edition").unwrap_or_default(),
        engine_edition: c.count("engine_edition"),
        start_time: c.time("sqlserver_start_time"),
    }
}
