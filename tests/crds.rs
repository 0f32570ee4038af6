//! The CRDs committed under crds/ are exactly the ones the code generates, and the sample resources
//! under config/samples/ validate against them — strictly: an unknown field is an error, as with
//! `kubectl apply --validate=strict`.

use std::path::Path;

use mysql_backup_operator::crd::crds_yaml;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn committed_crds_match_the_code() {
    // crds/ for kubectl and kustomize; the chart's crds/, which Helm installs and never deletes.
    for file in ["crds/crds.yaml", "charts/mysql-backup-operator/crds/crds.yaml"] {
        let committed = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
        assert!(
            committed == crds_yaml(),
            "{file} differs from the generated CRDs: run `cargo run -- crd > {file}` and commit it"
        );
    }
}

/// The openAPIV3Schema of `kind`, turned into plain JSON Schema: `nullable` becomes a null type, and
/// objects with declared properties accept no others.
fn schema_of(kind: &str) -> Value {
    let crds: Vec<Value> = serde_yaml::Deserializer::from_str(&crds_yaml())
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize_from(d)).unwrap())
        .collect();
    let crd = crds.iter().find(|c| c["spec"]["names"]["kind"] == kind).unwrap_or_else(|| panic!("no CRD for {kind}"));
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    schema
}

fn strict(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

trait DeserializeFrom {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> serde_yaml::Value;
}

impl DeserializeFrom for serde_yaml::Value {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> serde_yaml::Value {
        serde::Deserialize::deserialize(d).expect("valid YAML")
    }
}

fn errors(kind: &str, object: &Value) -> Vec<String> {
    let mut object = object.clone();
    // The API server checks these itself, not through the CRD's schema.
    for field in ["apiVersion", "kind", "metadata"] {
        object.as_object_mut().unwrap().remove(field);
    }
    let validator = jsonschema::validator_for(&schema_of(kind)).unwrap();
    validator.iter_errors(&object).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[test]
fn samples_validate_against_the_generated_schemas() {
    let dir = Path::new(ROOT).join("config/samples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        let kind = object["kind"].as_str().unwrap().to_string();
        assert_eq!(object["apiVersion"], "mysqlbackup.dev/v1alpha1", "{}", path.display());
        let errs = errors(&kind, &object);
        assert!(errs.is_empty(), "{} does not validate:\n{}", path.display(), errs.join("\n"));
        seen.push(kind);
    }
    seen.sort();
    assert_eq!(seen, ["BackupSchedule", "MySQLBackup", "MySQLRestore"]);
}

#[test]
fn schema_rejects_wrong_fields_naming_them() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/samples/mysqlbackup.yaml")).unwrap();
    let good: Value = serde_yaml::from_str(&text).unwrap();

    let mut bad = good.clone();
    bad["spec"]["storage"]["compressionLevel"] = 30.into();
    assert_eq!(errors("MySQLBackup", &bad), ["/spec/storage/compressionLevel: 30 is greater than the maximum of 19.0"]);

    let mut bad = good.clone();
    bad["spec"]["method"] = "rsync".into();
    let errs = errors("MySQLBackup", &bad);
    assert!(errs.len() == 1 && errs[0].starts_with("/spec/method: \"rsync\" is not one of"), "{errs:?}");

    let mut bad = good.clone();
    bad["spec"]["storage"]["secretAccessKey"] = "abc".into();
    let errs = errors("MySQLBackup", &bad);
    assert!(errs.len() == 1 && errs[0].starts_with("/spec/storage: Additional properties are not allowed"), "{errs:?}");

    let mut bad = good;
    bad["spec"].as_object_mut().unwrap().remove("source");
    assert_eq!(errors("MySQLBackup", &bad), ["/spec: \"source\" is a required property"]);
}

#[test]
fn specs_are_immutable_and_choices_exclusive_by_cel_rules() {
    let yaml = crds_yaml();
    let restore_rules = schema_of("MySQLRestore")["properties"]["spec"]["x-kubernetes-validations"].clone();
    assert!(
        restore_rules.as_array().unwrap().iter().any(|r| r["rule"] == "self == oldSelf"),
        "MySQLRestore's spec must be immutable"
    );
    // MySQLBackup: one rule on the object, comparing every spec field but deletionPolicy (which users
    // switch on existing backups); none on the spec's type, which is also BackupSchedule's template.
    let backup = schema_of("MySQLBackup");
    let rules = backup["x-kubernetes-validations"].as_array().expect("rules on the MySQLBackup object");
    let rule = rules
        .iter()
        .find(|r| r["message"] == "spec is immutable except deletionPolicy: create a new MySQLBackup")
        .expect("the immutability rule")["rule"]
        .as_str()
        .unwrap()
        .to_string();
    for field in ["source", "method", "storage", "job"] {
        assert!(
            rule.contains(&format!("self.spec.{field} == oldSelf.spec.{field}")),
            "{field} is not compared: {rule}"
        );
    }
    assert!(!rule.contains("deletionPolicy"), "{rule}");
    assert!(backup["properties"]["spec"].get("x-kubernetes-validations").is_none());
    let template = &schema_of("BackupSchedule")["properties"]["spec"]["properties"]["backupTemplate"];
    assert!(
        template.is_object() && template.get("x-kubernetes-validations").is_none(),
        "the template must stay editable"
    );
    assert!(yaml.contains("rule: has(self.backup) != has(self.storage)"));
    assert!(yaml.contains("rule: has(self.persistentVolumeClaim) != has(self.volumeClaimTemplate)"));
}
