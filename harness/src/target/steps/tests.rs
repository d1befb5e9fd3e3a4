//! Unit tests of the parent module.

use super::*;
use serde_json::json;

fn doc() -> Document {
    Document {
        source: super::super::Source {
            file: "t/expectations.yaml".into(),
            index: 0,
        },
        api_version: "kube-harness.dev/v1alpha1".into(),
        kind: "Expectations".into(),
        name: "t".into(),
        namespace: None,
        value: Value::Null,
    }
}

fn problem(steps: Value) -> String {
    let steps = steps.as_array().cloned().unwrap_or_default();
    match parse(&doc(), &steps, &[]) {
        Ok(s) => format!("parsed {} steps", s.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_step_kind_parses_and_gets_a_name() -> Result<(), LoadError> {
    let w = json!({"apiVersion": "ops.example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "d"}});
    let flat = json!({"apiVersion": "ops.example.com/v1", "kind": "Widget", "name": "w1", "namespace": "d"});
    let mut cond = flat.clone();
    cond["type"] = json!("Ready");
    cond["status"] = json!("True");
    let steps = [
        json!({"apply": [w]}),
        json!({"assert": w, "timeoutSeconds": 5, "snapshot": true, "name": "W is ready"}),
        json!({"patch": w, "user": "bob", "groups": ["devs"]}),
        json!({"condition": cond}),
        json!({"events": {"regarding": {"kind": "Widget", "name": "w1", "namespace": "d"}, "countAtLeast": 2}}),
        json!({"delete": flat}),
        json!({"absent": flat}),
    ];
    let parsed = parse(&doc(), &steps, &[])?;
    let names: Vec<String> = parsed.iter().map(Step::describe).collect();
    assert_eq!(
        names,
        [
            "step 1: apply Widget/d/w1",
            "step 2: W is ready",
            "step 3: patch Widget/d/w1",
            "step 4: condition Widget/d/w1 Ready=True",
            "step 5: events Widget/w1 ×2",
            "step 6: delete Widget/d/w1",
            "step 7: absent Widget/d/w1",
        ]
    );
    assert_eq!(parsed[1].timeout, Duration::from_secs(5));
    assert_eq!(parsed[1].snapshot_stem(), "step-w-is-ready");
    assert_eq!(parsed[2].identity.user.as_deref(), Some("bob"));
    Ok(())
}

#[test]
fn bad_steps_are_refused_with_the_document_step_and_field() {
    let p = problem(json!([{"apply": {"kind": "Widget", "metadata": {"name": "x"}}}]));
    assert!(
        p.contains(
            "t/expectations.yaml (document 1): Expectations/t: steps[0] (step 1): `apply`: object 1: needs `apiVersion`"
        ),
        "{p}"
    );
    let p = problem(json!([{"wait": {}}]));
    assert!(
        p.contains("step 1): unknown field `wait`: a step is one of apply, patch"),
        "{p}"
    );
    let p = problem(json!([{"name": "x"}]));
    assert!(p.contains("no action"), "{p}");
    let p = problem(json!([{"apply": [], "delete": {}}]));
    assert!(p.contains("apply and delete in one step"), "{p}");
    let p =
        problem(json!([{"absent": {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}, "timeoutSeconds": 3600}]));
    assert!(
        p.contains("`timeoutSeconds`: 3600 is over the run's budget of 300 s"),
        "{p}"
    );
    let p = problem(json!([{"events": {"regarding": {"kind": "Widget", "name": "nobody"}}}]));
    assert!(
        p.contains("`events`: regarding Widget/default/nobody: no fixture and no earlier `apply` step creates it"),
        "{p}"
    );
    let p = problem(json!([{"events": {"regarding": {"kind": "Widget", "name": "w"}, "count": 2}}]));
    assert!(p.contains("unknown field `count`"), "{p}");
    let p = problem(json!([{"delete": {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}, "snapshot": true}]));
    assert!(p.contains("`snapshot` is for `assert` steps"), "{p}");
    let p = problem(json!([{"condition": {"apiVersion": "v1", "kind": "X", "name": "c", "type": "Ready"}}]));
    assert!(p.contains("`condition`: missing field `status`"), "{p}");
}

#[test]
fn apply_reads_the_objects_of_a_file_under_steps() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("kh-step-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("steps"))?;
    std::fs::write(
        dir.join("steps/two.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: d}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: d}\n",
    )?;
    std::fs::write(dir.join("steps/broken.yaml"), "apiVersion: v1\nkind: [\n")?;
    let mut doc = doc();
    doc.source.file = dir.join("expectations.yaml");
    let one = |file: &str| parse(&doc, &[json!({"apply": {"file": file}})], &[]);
    let parsed = one("steps/two.yaml")?;
    let names: Vec<String> = parsed.iter().map(Step::describe).collect();
    assert_eq!(names, ["step 1: apply ConfigMap/d/a, ConfigMap/d/b"]);
    let problem = |file: &str| one(file).err().map(|e| e.to_string()).unwrap_or_default();
    let p = problem("two.yaml");
    assert!(
        p.contains("step 1): `apply`: file \"two.yaml\" must be inside a directory named `steps/`"),
        "{p}"
    );
    let p = problem("steps/../../etc/passwd");
    assert!(p.contains("must be inside a directory named `steps/`"), "{p}");
    let p = problem("steps/missing.yaml");
    assert!(p.contains("`apply`: file \"steps/missing.yaml\": cannot read"), "{p}");
    let p = problem("steps/broken.yaml");
    assert!(p.contains("steps/broken.yaml") && p.contains("line 2"), "{p}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
