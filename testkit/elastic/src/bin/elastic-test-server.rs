//! The Elasticsearch API test server as a process, for `sqlvigil-bench elastic`: prints
//! its URL on the first line of stdout and serves until stdin closes.

use std::io::{BufRead, Write};

fn main() {
    let es = sqlvigil_testkit_elastic::ElasticServer::start();
    println!("{}", es.url());
    let _ = std::io::stdout().flush();
    // Serve until the parent closes our stdin (or dies).
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}
