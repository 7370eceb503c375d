//! `docs/openapi.yaml` stays in step with the routes the server mounts.
//!
//! The route table `tasq::http::routes()` is the single source of the mounted routes; this test
//! reads it and the OpenAPI file and checks, both ways, that every mounted (method, path) is an
//! operation of the spec and every operation of the spec is mounted. Path parameters are
//! compared by position only (`{x}` → `{}`), so a rename on one side alone is still caught by
//! the parameter checks below. It also checks the conventions the schemathesis run relies on:
//! every path parameter is declared, every operation has an id and the contract's error body
//! for each non-2xx answer, and every JSON request body rejects unknown fields.

use std::collections::BTreeSet;

use serde_yaml::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

/// `/a/{x}/b/{y}` → `/a/{}/b/{}`.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The `{x}` names of a path template, in order.
fn template_params(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// Follows a local `$ref` (`#/components/...`); other values are returned as they are.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    let Some(r) = v.get("$ref").and_then(Value::as_str) else {
        return v;
    };
    let pointer = r.strip_prefix("#/").expect("only local $refs");
    let target = pointer.split('/').fold(spec, |node, key| &node[key]);
    assert!(!target.is_null(), "$ref {r} points nowhere");
    resolve(spec, target)
}

/// Every (METHOD, normalized path) operation of the spec, with the raw path and operation.
fn operations(spec: &Value) -> Vec<(String, String, String, &Value, &Value)> {
    let paths = spec["paths"].as_mapping().expect("paths is a mapping");
    let mut out = Vec::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path keys are strings");
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((
                    m.to_uppercase(),
                    normalize(path),
                    path.to_string(),
                    item,
                    op,
                ));
            }
        }
    }
    out
}

#[test]
fn the_spec_is_openapi_3_0() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str(), Some("3.0.3"));
    assert!(spec["info"]["title"].is_string());
}

#[test]
fn every_mounted_route_is_in_the_spec_and_every_operation_is_mounted() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|(m, p, ..)| (m, p))
        .collect();
    let mounted: BTreeSet<(String, String)> = tasq::http::routes()
        .into_iter()
        .map(|r| (r.method.as_str().to_string(), normalize(&r.contract_path)))
        .collect();
    let missing: Vec<_> = mounted.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        missing.is_empty(),
        "mounted routes missing from docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "operations in docs/openapi.yaml that the server does not mount: {extra:?}"
    );
    assert_eq!(
        mounted.len(),
        tasq::http::routes().len(),
        "the route table lists a route twice"
    );
}

#[test]
fn path_parameters_are_named_as_mounted() {
    // Same names as the actix patterns, so error messages and metrics labels match the spec.
    let spec = spec();
    let documented: BTreeSet<String> = spec["paths"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for route in tasq::http::routes() {
        assert!(
            documented.contains(&route.contract_path),
            "{} {}: the spec has no path spelled exactly like that",
            route.method,
            route.contract_path
        );
    }
}

#[test]
fn every_path_parameter_is_declared() {
    let spec = spec();
    for (method, _, path, item, op) in operations(&spec) {
        let mut declared = BTreeSet::new();
        for list in [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
        {
            for p in list.as_sequence().expect("parameters is a list") {
                let p = resolve(&spec, p);
                if p["in"].as_str() == Some("path") {
                    assert_eq!(p["required"].as_bool(), Some(true), "{method} {path}");
                    declared.insert(p["name"].as_str().unwrap().to_string());
                }
            }
        }
        let wanted: BTreeSet<String> = template_params(&path).into_iter().collect();
        assert_eq!(declared, wanted, "{method} {path}: path parameters");
    }
}

#[test]
fn operations_have_ids_and_errors_have_the_contract_shape() {
    let spec = spec();
    let mut ids = BTreeSet::new();
    for (method, _, path, _, op) in operations(&spec) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} used twice");
        let responses = op["responses"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"));
        let mut has_success = false;
        for (code, response) in responses {
            let code = code.as_str().expect("status codes are quoted strings");
            let status: u16 = code.parse().expect("numeric status codes");
            if status < 400 {
                has_success = true;
                continue;
            }
            let response = resolve(&spec, response);
            let schema = &response["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"].as_str(),
                Some("#/components/schemas/Error"),
                "{method} {path} {code}: errors answer {{\"error\": {{\"code\", \"message\"}}}}"
            );
        }
        assert!(has_success, "{method} {path}: no success response");
    }
}

/// Every object schema with `properties` under `schema` (through `$ref`, `properties`,
/// `items` and `allOf`) must say `additionalProperties: false`.
fn check_closed(spec: &Value, schema: &Value, at: &str) {
    let schema = resolve(spec, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_mapping) {
        assert_eq!(
            schema["additionalProperties"].as_bool(),
            Some(false),
            "{at}: the server rejects unknown fields, the spec must say so"
        );
        for (name, prop) in props {
            check_closed(spec, prop, &format!("{at}.{}", name.as_str().unwrap()));
        }
    }
    if let Some(items) = schema.get("items") {
        check_closed(spec, items, &format!("{at}[]"));
    }
    for part in schema["allOf"].as_sequence().into_iter().flatten() {
        check_closed(spec, part, at);
    }
}

#[test]
fn request_bodies_reject_unknown_fields() {
    let spec = spec();
    let mut bodies = 0;
    for (method, _, path, _, op) in operations(&spec) {
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        let schema = &body["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{method} {path}: a JSON request body");
        check_closed(&spec, schema, &format!("{method} {path} body"));
        bodies += 1;
    }
    // add, batch, poll, complete, fail, settle many, heartbeat, config, redrive.
    assert_eq!(bodies, 9, "operations with a request body");
}

#[test]
fn normalize_and_template_params() {
    assert_eq!(normalize("/a/{x}/b/{yy}/c"), "/a/{}/b/{}/c");
    assert_eq!(template_params("/a/{x}/b/{yy}/c"), vec!["x", "yy"]);
    assert!(template_params("/healthz").is_empty());
}
