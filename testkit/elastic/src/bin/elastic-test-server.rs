//! The Elasticsearch API test server as a process: prints its URL on the first line of
//! stdout and serves until stdin closes.

fn main() {
    sqlvigil_testkit_elastic::serve_until_stdin_closes();
}
