//! Spec parsing tables: Swagger 2.0, OpenAPI 3.0 and 3.1, JSON and YAML, local `$ref`s,
//! path-level parameters, body mapping and the tool's `inputSchema`; then names: namespaces and
//! the duplicate-name error.

use mesh7::openapi::spec::{BodyShape, Location, Media, operations, parse_document};
use mesh7::openapi::{LoadContext, OpenApiError, load};
use mesh7_config::OpenApiConfig;
use serde_json::{Value, json};

/// What a test expects of one operation.
struct Expected {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    /// (name, location, required)
    params: Vec<(&'static str, Location, bool)>,
    body: Option<(Media, BodyShape, bool)>,
    schema: Value,
}

fn check(label: &str, text: &str, expected: &[Expected]) {
    let doc = parse_document(text).unwrap_or_else(|e| panic!("{label}: {e}"));
    let ops = operations(&doc).unwrap_or_else(|e| panic!("{label}: {e}"));
    let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
    let wanted: Vec<&str> = expected.iter().map(|e| e.name).collect();
    assert_eq!(names, wanted, "{label}: operations");
    for (op, exp) in ops.iter().zip(expected) {
        let at = format!("{label}: {}", exp.name);
        assert_eq!(
            (op.method.as_str(), op.path.as_str()),
            (exp.method, exp.path),
            "{at}"
        );
        let params: Vec<(&str, Location, bool)> = op
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.location, p.required))
            .collect();
        assert_eq!(params, exp.params, "{at}: params");
        let body = op
            .body
            .as_ref()
            .map(|b| (b.media, b.shape.clone(), b.required));
        assert_eq!(body, exp.body, "{at}: body");
        assert_eq!(op.input_schema, exp.schema, "{at}: inputSchema");
    }
}

const SWAGGER2_JSON: &str = r##"{
  "swagger": "2.0",
  "info": {"title": "pets", "version": "1"},
  "host": "pets.example", "basePath": "/v2",
  "paths": {
    "/pet/{petId}": {
      "parameters": [{"name": "petId", "in": "path", "required": true, "type": "integer", "format": "int64"}],
      "get": {"operationId": "getPetById", "summary": "Find pet by ID",
        "parameters": [{"name": "fields", "in": "query", "type": "array", "items": {"type": "string", "enum": ["name", "tag"]}}]},
      "post": {"operationId": "updatePetWithForm", "consumes": ["application/x-www-form-urlencoded"],
        "parameters": [
          {"name": "name", "in": "formData", "type": "string", "description": "New name"},
          {"name": "status", "in": "formData", "type": "string", "required": true}]}
    },
    "/pet": {
      "put": {"operationId": "updatePet",
        "parameters": [
          {"name": "api_key", "in": "header", "type": "string"},
          {"in": "body", "name": "body", "required": true, "schema": {"$ref": "#/definitions/Pet"}}]}
    }
  },
  "definitions": {
    "Pet": {"type": "object", "required": ["name"], "properties": {
      "id": {"type": "integer"}, "name": {"type": "string"},
      "category": {"$ref": "#/definitions/Category"}}},
    "Category": {"type": "object", "properties": {"name": {"type": "string"}}}
  }
}"##;

const OPENAPI30_YAML: &str = r##"
openapi: 3.0.3
info: {title: store, version: "1"}
paths:
  /stores/{storeId}/orders:
    parameters:
      - $ref: "#/components/parameters/StoreId"
      - name: limit
        in: query
        schema: {type: integer}
    get:
      operationId: listOrders
      parameters:
        # Overrides the path-level `limit`: now required.
        - name: limit
          in: query
          required: true
          schema: {type: integer, minimum: 1, exclusiveMinimum: true}
    post:
      summary: Place an order
      requestBody:
        $ref: "#/components/requestBodies/Order"
  /stores/{storeId}/tags:
    parameters:
      - $ref: "#/components/parameters/StoreId"
    put:
      operationId: setTags
      requestBody:
        content:
          application/json:
            schema:
              type: array
              items: {type: string}
components:
  parameters:
    StoreId:
      name: storeId
      in: path
      required: true
      description: The store
      schema: {type: string}
  requestBodies:
    Order:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Order"}
  schemas:
    Order:
      allOf:
        - $ref: "#/components/schemas/Base"
        - type: object
          required: [quantity]
          properties:
            quantity: {type: integer}
            note: {type: string, nullable: true}
    Base:
      type: object
      required: [sku]
      properties:
        sku: {type: string}
"##;

const OPENAPI31_JSON: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "docs", "version": "1"},
  "paths": {
    "/docs/{doc-id}": {
      "patch": {
        "parameters": [{"name": "doc-id", "in": "path", "required": true, "schema": {"type": "string"}},
                       {"name": "session", "in": "cookie", "schema": {"type": "string"}}],
        "requestBody": {"content": {"application/merge-patch+json": {"schema": {
          "type": "object", "properties": {
            "title": {"type": ["string", "null"]},
            "owner": {"$ref": "#/components/schemas/User", "description": "New owner"}}}}}}
      },
      "head": {"operationId": "headDoc"},
      "x-internal": {"note": "not an operation"}
    }
  },
  "components": {"schemas": {"User": {"type": "object", "properties": {"login": {"type": "string"}}}}}
}"##;

#[test]
fn parses_swagger_2_json() {
    check(
        "swagger 2.0",
        SWAGGER2_JSON,
        &[
            Expected {
                name: "get_pet_by_id",
                method: "GET",
                path: "/pet/{petId}",
                params: vec![
                    ("petId", Location::Path, true),
                    ("fields", Location::Query, false),
                ],
                body: None,
                schema: json!({"type": "object", "properties": {
                    "petId": {"type": "integer", "format": "int64"},
                    "fields": {"type": "array", "items": {"type": "string", "enum": ["name", "tag"]}}},
                    "required": ["petId"]}),
            },
            Expected {
                name: "update_pet_with_form",
                method: "POST",
                path: "/pet/{petId}",
                params: vec![("petId", Location::Path, true)],
                body: Some((
                    Media::Form,
                    BodyShape::Properties(vec!["name".into(), "status".into()]),
                    true,
                )),
                schema: json!({"type": "object", "properties": {
                    "petId": {"type": "integer", "format": "int64"},
                    "name": {"type": "string", "description": "New name"},
                    "status": {"type": "string"}},
                    "required": ["petId", "status"]}),
            },
            Expected {
                name: "update_pet",
                method: "PUT",
                path: "/pet",
                params: vec![("api_key", Location::Header, false)],
                body: Some((
                    Media::Json,
                    BodyShape::Properties(vec!["category".into(), "id".into(), "name".into()]),
                    true,
                )),
                schema: json!({"type": "object", "properties": {
                    "api_key": {"type": "string"},
                    "category": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "id": {"type": "integer"},
                    "name": {"type": "string"}},
                    "required": ["name"]}),
            },
        ],
    );
}

#[test]
fn parses_openapi_3_0_yaml_with_refs_and_path_level_parameters() {
    check(
        "openapi 3.0 yaml",
        OPENAPI30_YAML,
        &[
            Expected {
                name: "list_orders",
                method: "GET",
                path: "/stores/{storeId}/orders",
                params: vec![
                    ("storeId", Location::Path, true),
                    ("limit", Location::Query, true),
                ],
                body: None,
                schema: json!({"type": "object", "properties": {
                    "storeId": {"type": "string", "description": "The store"},
                    "limit": {"type": "integer", "exclusiveMinimum": 1}},
                    "required": ["storeId", "limit"]}),
            },
            Expected {
                name: "post_stores_storeId_orders",
                method: "POST",
                path: "/stores/{storeId}/orders",
                params: vec![
                    ("storeId", Location::Path, true),
                    ("limit", Location::Query, false),
                ],
                body: Some((
                    Media::Json,
                    BodyShape::Properties(vec!["note".into(), "quantity".into(), "sku".into()]),
                    true,
                )),
                schema: json!({"type": "object", "properties": {
                    "storeId": {"type": "string", "description": "The store"},
                    "limit": {"type": "integer"},
                    "note": {"type": ["string", "null"]},
                    "quantity": {"type": "integer"},
                    "sku": {"type": "string"}},
                    "required": ["storeId", "quantity", "sku"]}),
            },
            Expected {
                name: "set_tags",
                method: "PUT",
                path: "/stores/{storeId}/tags",
                params: vec![("storeId", Location::Path, true)],
                body: Some((Media::Json, BodyShape::Whole, false)),
                schema: json!({"type": "object", "properties": {
                    "storeId": {"type": "string", "description": "The store"},
                    "body": {"type": "array", "items": {"type": "string"}}},
                    "required": ["storeId"]}),
            },
        ],
    );
}

#[test]
fn parses_openapi_3_1_json_and_skips_what_is_not_an_operation() {
    check(
        "openapi 3.1",
        OPENAPI31_JSON,
        &[Expected {
            name: "patch_docs_doc_id",
            method: "PATCH",
            path: "/docs/{doc-id}",
            params: vec![
                ("doc-id", Location::Path, true),
                ("session", Location::Cookie, false),
            ],
            body: Some((
                Media::Json,
                BodyShape::Properties(vec!["owner".into(), "title".into()]),
                false,
            )),
            schema: json!({"type": "object", "properties": {
                "doc-id": {"type": "string"},
                "session": {"type": "string"},
                "owner": {"type": "object", "properties": {"login": {"type": "string"}}, "description": "New owner"},
                "title": {"type": ["string", "null"]}},
                "required": ["doc-id"]}),
        }],
    );
}

#[test]
fn a_body_property_named_like_a_parameter_keeps_the_body_whole() {
    let text = r#"{"openapi": "3.0.0", "paths": {"/users/{id}": {"put": {"operationId": "putUser",
        "parameters": [{"name": "id", "in": "path", "required": true}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}}}}}}}}"#;
    let ops = operations(&parse_document(text).unwrap()).unwrap();
    assert_eq!(ops[0].body.as_ref().unwrap().shape, BodyShape::Whole);
    assert_eq!(ops[0].input_schema["required"], json!(["id", "body"]));
}

#[test]
fn documents_that_are_not_specs_are_errors() {
    let table = [
        ("{\"openapi\": \"3.0.0\"}", "no paths found in spec"),
        (
            "{\"info\": {}, \"paths\": {\"/a\": {}}}",
            "not an OpenAPI 3.x or Swagger 2.0 document (no `openapi` or `swagger` version)",
        ),
        ("openapi: [unclosed", "parse spec: "),
    ];
    for (text, expected) in table {
        let err = parse_document(text)
            .and_then(|doc| operations(&doc).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(expected), "{text}: {err}");
    }
}

fn entry(file: &str, namespace: Option<&str>) -> OpenApiConfig {
    OpenApiConfig {
        file: Some(file.to_owned()),
        backend_url: Some("http://127.0.0.1:9".to_owned()),
        namespace: namespace.map(str::to_owned),
        ..OpenApiConfig::default()
    }
}

#[actix_rt::test]
async fn namespaces_prefix_names_and_two_tools_with_one_name_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), OPENAPI30_YAML).unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        OPENAPI30_YAML.replace("listOrders", "list_orders"),
    )
    .unwrap();
    let ctx = LoadContext {
        base_dir: dir.path().to_path_buf(),
        cache: None,
    };

    let tools = load(
        &[entry("a.yaml", Some("shop")), entry("b.json", None)],
        &ctx,
    )
    .await
    .unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shop.list_orders",
            "shop.post_stores_storeId_orders",
            "shop.set_tags",
            "list_orders",
            "post_stores_storeId_orders",
            "set_tags",
        ]
    );
    assert_eq!(tools[0].group, "shop");
    assert_eq!(tools[3].group, "openapi");

    let err = load(&[entry("a.yaml", None), entry("b.json", None)], &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        OpenApiError::Duplicate {
            name: "list_orders".into(),
            first: "GET /stores/{storeId}/orders (a.yaml)".into(),
            second: "GET /stores/{storeId}/orders (b.json)".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "openapi: two tools are named \"list_orders\": GET /stores/{storeId}/orders (a.yaml) and GET /stores/{storeId}/orders (b.json)"
    );
}

#[test]
fn an_entry_timeout_must_be_a_positive_duration() {
    let yaml = "openapi:\n  - file: a.yaml\n    backend_url: http://127.0.0.1:9\n    timeout: soon\n  - file: b.yaml\n    timeout: 0s\n";
    let errors = mesh7_config::load_str(yaml, std::path::Path::new("mesh7.yaml")).unwrap_err();
    let texts: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("openapi[0]") && texts[0].contains("invalid timeout \"soon\""),
        "{texts:?}"
    );
    assert!(
        texts[1].contains("openapi[1]") && texts[1].contains("invalid timeout \"0s\""),
        "{texts:?}"
    );
}
