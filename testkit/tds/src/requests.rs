//! Parsers for what clients send: PRELOGIN (2.2.6.5), LOGIN7 (2.2.6.4), SQL batch
//! (2.2.6.7), RPC (2.2.6.6) and transaction manager requests (2.2.6.9); and the
//! PRELOGIN answer.

use bytes::BufMut;

use crate::tokens::SERVER_VERSION;
use crate::wire::{proto, utf16_le, Rd, WireError};

pub(crate) const ENCRYPT_OFF: u8 = 0;
pub(crate) const ENCRYPT_ON: u8 = 1;
pub(crate) const ENCRYPT_NOT_SUP: u8 = 2;
pub(crate) const ENCRYPT_REQ: u8 = 3;

/// The client's PRELOGIN options this server looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prelogin {
    pub encryption: u8,
    pub fed_auth_required: bool,
    #[allow(dead_code)]
    pub mars: bool,
    #[allow(dead_code)]
    pub instance: Option<String>,
    #[allow(dead_code)]
    pub thread_id: Option<u32>,
}

pub(crate) fn parse_prelogin(p: &[u8]) -> Result<Prelogin, WireError> {
    let mut out = Prelogin {
        encryption: ENCRYPT_NOT_SUP,
        ..Prelogin::default()
    };
    let mut rd = Rd::new(p);
    loop {
        let token = rd.u8()?;
        if token == 0xFF {
            break;
        }
        let offset = rd.u16_be()? as usize;
        let len = rd.u16_be()? as usize;
        let mut v = Rd::at(p, offset);
        let data = v.bytes(len)?;
        match token {
            0x01 if len >= 1 => out.encryption = data[0],
            0x02 => {
                let name: Vec<u8> = data.iter().copied().take_while(|b| *b != 0).collect();
                out.instance = Some(String::from_utf8_lossy(&name).into_owned());
            }
            0x03 if len >= 4 => {
                out.thread_id = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
            }
            0x04 if len >= 1 => out.mars = data[0] != 0,
            0x06 if len >= 1 => out.fed_auth_required = data[0] != 0,
            _ => {}
        }
    }
    if out.encryption > ENCRYPT_REQ {
        return Err(proto(format!(
            "invalid PRELOGIN encryption value {}",
            out.encryption
        )));
    }
    Ok(out)
}

/// The PRELOGIN answer: VERSION, ENCRYPTION, INSTOPT, THREADID (empty), MARS and,
/// when the client asked, FEDAUTHREQUIRED.
pub(crate) fn prelogin_response(encryption: u8, fed_auth: Option<bool>) -> Vec<u8> {
    let (major, minor, build) = SERVER_VERSION;
    let mut fields: Vec<(u8, Vec<u8>)> = vec![
        (0x00, {
            let mut v = vec![major, minor];
            v.put_u16(build);
            v.put_u16(0);
            v
        }),
        (0x01, vec![encryption]),
        (0x02, vec![0]),
        (0x03, vec![]),
        (0x04, vec![0]),
    ];
    if let Some(fa) = fed_auth {
        fields.push((0x06, vec![fa as u8]));
    }
    let mut out = Vec::new();
    let mut offset = fields.len() * 5 + 1;
    for (token, data) in &fields {
        out.put_u8(*token);
        out.put_u16(offset as u16);
        out.put_u16(data.len() as u16);
        offset += data.len();
    }
    out.put_u8(0xFF);
    for (_, data) in fields {
        out.extend_from_slice(&data);
    }
    out
}

/// What LOGIN7 carried.
#[derive(Debug, Clone, Default)]
pub(crate) struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub read_only: bool,
    pub host_name: String,
    pub user: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub database: String,
    pub integrated_security: bool,
    /// The FEDAUTH security token, when the client logged in with one.
    pub fed_auth_token: Option<String>,
}

pub(crate) fn parse_login7(p: &[u8]) -> Result<Login7, WireError> {
    let mut rd = Rd::new(p);
    let _length = rd.u32_le()?;
    let tds_version = rd.u32_le()?;
    let packet_size = rd.u32_le()?;
    rd.skip(12)?; // client prog version, pid, connection id
    let _flags1 = rd.u8()?;
    let flags2 = rd.u8()?;
    let type_flags = rd.u8()?;
    let flags3 = rd.u8()?;
    rd.skip(8)?; // time zone, LCID
    let mut offsets = Vec::new();
    for _ in 0..9 {
        offsets.push((rd.u16_le()? as usize, rd.u16_le()? as usize));
    }
    let text = |i: usize| -> Result<String, WireError> {
        let (off, len) = offsets[i];
        Ok(utf16_le(Rd::at(p, off).bytes(len * 2)?))
    };
    let password = {
        let (off, len) = offsets[2];
        let raw = Rd::at(p, off).bytes(len * 2)?;
        let clear: Vec<u8> = raw
            .iter()
            .map(|b| {
                let x = b ^ 0xA5;
                x.rotate_left(4)
            })
            .collect();
        utf16_le(&clear)
    };
    let mut fed_auth_token = None;
    if flags3 & 0x10 != 0 {
        // ibExtension points at a DWORD holding the offset of the FeatureExt block.
        let (ext_off, ext_len) = offsets[5];
        if ext_len >= 4 {
            let feat_off = Rd::at(p, ext_off).u32_le()? as usize;
            let mut f = Rd::at(p, feat_off);
            loop {
                let id = f.u8()?;
                if id == 0xFF {
                    break;
                }
                let len = f.u32_le()? as usize;
                let data = f.bytes(len)?;
                if id == 0x02 {
                    let mut d = Rd::new(data);
                    let options = d.u8()?;
                    if options >> 1 == 0x01 {
                        let tlen = d.u32_le()? as usize;
                        fed_auth_token = Some(utf16_le(d.bytes(tlen)?));
                    } else {
                        return Err(proto(format!(
                            "FEDAUTH library {} is not supported (only security tokens)",
                            options >> 1
                        )));
                    }
                }
            }
        }
    }
    Ok(Login7 {
        tds_version,
        packet_size,
        read_only: type_flags & 0x20 != 0,
        host_name: text(0)?,
        user: text(1)?,
        password,
        app_name: text(3)?,
        server_name: text(4)?,
        database: text(8)?,
        integrated_security: flags2 & 0x80 != 0,
        fed_auth_token,
    })
}

/// Skips ALL_HEADERS when present (mandatory from TDS 7.2 on).
fn skip_all_headers(p: &[u8]) -> usize {
    if p.len() >= 4 {
        let total = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
        if (4..=p.len()).contains(&total) {
            return total;
        }
    }
    0
}

pub(crate) fn parse_sql_batch(p: &[u8]) -> Result<String, WireError> {
    let start = skip_all_headers(p);
    let text = &p[start..];
    if !text.len().is_multiple_of(2) {
        return Err(proto("SQL batch text has an odd number of bytes"));
    }
    Ok(utf16_le(text))
}

/// What an RPC request asked for, reduced to the text to match fixtures against.
#[derive(Debug)]
pub(crate) struct Rpc {
    /// `sp_executesql` (id 10) and friends, or the procedure name.
    pub procedure: String,
    /// The statement text (sp_executesql / sp_prepexec), or the procedure name.
    pub text: String,
}

pub(crate) fn parse_rpc(p: &[u8]) -> Result<Rpc, WireError> {
    let mut rd = Rd::at(p, skip_all_headers(p));
    let name_len = rd.u16_le()?;
    let (proc_id, procedure) = if name_len == 0xFFFF {
        let id = rd.u16_le()?;
        let name = match id {
            10 => "sp_executesql".to_string(),
            11 => "sp_prepare".to_string(),
            12 => "sp_execute".to_string(),
            13 => "sp_prepexec".to_string(),
            other => format!("proc#{other}"),
        };
        (Some(id), name)
    } else {
        (None, rd.utf16(name_len as usize)?)
    };
    let _options = rd.u16_le()?;
    let lower = procedure.to_ascii_lowercase();
    let stmt_index = match (proc_id, lower.as_str()) {
        (Some(10), _) | (None, "sp_executesql") => Some(0),
        (Some(13), _) | (None, "sp_prepexec") => Some(2),
        (Some(11), _) | (None, "sp_prepare") => Some(2),
        _ => None,
    };
    let text = match stmt_index {
        None => procedure.clone(),
        Some(index) => {
            let mut found = None;
            for i in 0..=index {
                let value = read_param(&mut rd)?;
                if i == index {
                    found = value;
                }
            }
            found.ok_or_else(|| {
                proto(format!(
                    "{procedure}: the statement parameter is not a string"
                ))
            })?
        }
    };
    Ok(Rpc { procedure, text })
}

/// Reads one RPC parameter; returns its value when it is a (non-NULL) string.
fn read_param(rd: &mut Rd<'_>) -> Result<Option<String>, WireError> {
    let name_len = rd.u8()? as usize;
    rd.skip(name_len * 2)?;
    let _status = rd.u8()?;
    let ty = rd.u8()?;
    match ty {
        // Fixed-length types.
        0x1F => Ok(None),
        0x30 | 0x32 => rd.skip(1).map(|_| None),
        0x34 => rd.skip(2).map(|_| None),
        0x38 | 0x3A | 0x3B | 0x7A => rd.skip(4).map(|_| None),
        0x3C | 0x3D | 0x3E | 0x7F => rd.skip(8).map(|_| None),
        // Byte-length types: INTN, BITN, FLTN, MONEYN, DATETIMN, GUID.
        0x26 | 0x68 | 0x6D | 0x6E | 0x6F | 0x24 => {
            rd.skip(1)?;
            let len = rd.u8()? as usize;
            rd.skip(len).map(|_| None)
        }
        0x6A | 0x6C => {
            rd.skip(3)?;
            let len = rd.u8()? as usize;
            rd.skip(len).map(|_| None)
        }
        0x28 => {
            let len = rd.u8()? as usize;
            rd.skip(len).map(|_| None)
        }
        0x29..=0x2B => {
            rd.skip(1)?;
            let len = rd.u8()? as usize;
            rd.skip(len).map(|_| None)
        }
        // USHORTLEN types, PLP when the max length is 0xFFFF.
        0xE7 | 0xEF | 0xA7 | 0xAF | 0xA5 | 0xAD => {
            let max = rd.u16_le()?;
            if matches!(ty, 0xE7 | 0xEF | 0xA7 | 0xAF) {
                rd.skip(5)?;
            }
            let bytes = if max == 0xFFFF {
                read_plp(rd)?
            } else {
                let len = rd.u16_le()?;
                if len == 0xFFFF {
                    None
                } else {
                    Some(rd.bytes(len as usize)?.to_vec())
                }
            };
            Ok(bytes.and_then(|b| decode_text(ty, &b)))
        }
        // NTEXT / TEXT / IMAGE: LONGLEN.
        0x63 | 0x23 | 0x22 => {
            rd.skip(4)?;
            if ty != 0x22 {
                rd.skip(5)?;
            }
            let len = rd.u32_le()?;
            if len == 0xFFFF_FFFF {
                return Ok(None);
            }
            let b = rd.bytes(len as usize)?;
            Ok(decode_text(ty, b))
        }
        other => Err(proto(format!(
            "RPC parameter type {other:#04x} is not supported"
        ))),
    }
}

fn decode_text(ty: u8, b: &[u8]) -> Option<String> {
    match ty {
        0xE7 | 0xEF | 0x63 => Some(utf16_le(b)),
        0xA7 | 0xAF | 0x23 => Some(b.iter().map(|c| *c as char).collect()),
        _ => None,
    }
}

fn read_plp(rd: &mut Rd<'_>) -> Result<Option<Vec<u8>>, WireError> {
    let total = rd.u64_le()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let chunk = rd.u32_le()? as usize;
        if chunk == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(rd.bytes(chunk)?);
    }
}

/// Transaction manager request (2.2.6.9).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TmRequest {
    Begin,
    Commit { begin_new: bool },
    Rollback { begin_new: bool },
    Other(u16),
}

pub(crate) fn parse_tm(p: &[u8]) -> Result<TmRequest, WireError> {
    let mut rd = Rd::at(p, skip_all_headers(p));
    let ty = rd.u16_le()?;
    let begin_new = |rd: &mut Rd<'_>| -> Result<bool, WireError> {
        let name = rd.u8()? as usize;
        rd.skip(name * 2)?;
        Ok(rd.remaining() > 0 && rd.u8()? & 0x01 != 0)
    };
    Ok(match ty {
        5 => TmRequest::Begin,
        7 => TmRequest::Commit {
            begin_new: begin_new(&mut rd)?,
        },
        8 => TmRequest::Rollback {
            begin_new: begin_new(&mut rd)?,
        },
        other => TmRequest::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelogin_answer_parses_back() {
        let resp = prelogin_response(ENCRYPT_ON, Some(true));
        let parsed = parse_prelogin(&resp).expect("parse");
        assert_eq!(parsed.encryption, ENCRYPT_ON);
        assert!(parsed.fed_auth_required);
    }

    #[test]
    fn short_payloads_are_errors_not_panics() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = parse_prelogin(&junk);
            let _ = parse_login7(&junk);
            let _ = parse_rpc(&junk);
            let _ = parse_tm(&junk);
            let _ = parse_sql_batch(&junk);
        }
        let mut big = vec![0xFFu8; 200];
        big[0] = 0x01;
        let _ = parse_login7(&big);
    }
}
