//! The web console: static files embedded in the binary (`api/console/`: the page, its
//! script and style, and uPlot 1.6.32 vendored from its npm package with its MIT
//! licence), served at `/` and `/console/<file>`. Nothing is loaded from outside at run
//! time. For working on the console, `SQLVIGIL_CONSOLE_DIR=<dir>` serves the files from
//! that directory instead, read at every request.

use crate::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Each file: its path under `/console/`, its content type and its bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/app.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.LICENSE"),
    ),
];

/// The file at `path`, from `SQLVIGIL_CONSOLE_DIR` when set, else embedded.
fn file(path: &str) -> Result<Response, ApiError> {
    let Some((name, kind, bytes)) = FILES.iter().find(|(name, _, _)| *name == path) else {
        return Err(ApiError::NotFound(format!("no console file `{path}`")));
    };
    let body = match std::env::var_os("SQLVIGIL_CONSOLE_DIR") {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(name))
            .map_err(|e| ApiError::NotFound(format!("console file `{name}`: {e}")))?,
        None => bytes.to_vec(),
    };
    Ok((
        [
            (header::CONTENT_TYPE, *kind),
            // The page changes with the binary; revalidate rather than run stale code.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn index() -> Result<Response, ApiError> {
    file("index.html")
}

pub(crate) async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    file(&path)
}
