//! The Kibana saved objects name only fields the installed mappings have.

use serde_json::Value;
use sqlvigil_bridge::layout::{Kind, LayoutOptions};

/// Does `path` (dotted) exist in a mapping's `properties`?
fn mapped(mappings: &Value, path: &str) -> bool {
    let mut node = mappings;
    for part in path.split('.') {
        match node.get("properties").and_then(|p| p.get(part)) {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

/// Mappings of the templates whose patterns cover `index` (component templates included).
fn mappings_for(opts: &LayoutOptions, title: &str) -> Vec<Value> {
    let objects = opts.objects();
    let components = |names: &Value| -> Vec<Value> {
        names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                objects
                    .iter()
                    .find(|(k, name, _)| *k == Kind::ComponentTemplate && name == n)
                    .map(|(_, _, b)| b["template"]["mappings"].clone())
            })
            .collect()
    };
    let first = title.split(',').next().unwrap_or_default();
    objects
        .iter()
        .filter(|(k, _, b)| {
            *k == Kind::IndexTemplate
                && b["index_patterns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p.as_str() == Some(first))
        })
        .flat_map(|(_, _, b)| {
            let mut m = components(&b["composed_of"]);
            m.push(b["template"]["mappings"].clone());
            m
        })
        .collect()
}

#[test]
fn saved_objects_name_mapped_fields() {
    let text = include_str!("../../dashboards/kibana/sqlvigil.ndjson");
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    let opts = LayoutOptions::default();
    for view in objects.iter().filter(|o| o["type"] == "index-pattern") {
        let title = view["attributes"]["title"].as_str().unwrap_or_default();
        let maps = mappings_for(&opts, title);
        assert!(!maps.is_empty(), "no template covers data view `{title}`");
        let time = view["attributes"]["timeFieldName"]
            .as_str()
            .unwrap_or_default();
        assert!(
            maps.iter().any(|m| mapped(m, time)),
            "`{time}` is not mapped for `{title}`"
        );
        for search in objects
            .iter()
            .filter(|o| o["type"] == "search" && o["references"][0]["id"] == view["id"])
        {
            for col in search["attributes"]["columns"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let col = col.as_str().unwrap_or_default();
                assert!(
                    maps.iter().any(|m| mapped(m, col)),
                    "`{col}` of {} is not mapped",
                    search["id"]
                );
            }
        }
    }
}
