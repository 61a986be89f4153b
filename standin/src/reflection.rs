//! gRPC server reflection for the atelet stand-in: upstream's atelet
//! registers reflection (`cmd/atelet/main.go:173-175`), so a client that
//! lists services sees `atelet.AteomHerder` on the stand-in too.
//!
//! The descriptor is built here by hand with `prost-types` from the API
//! facts (package `atelet`; messages, field names and numbers as in
//! `ate-atelet-api`, which `atelet-api/tests/roundtrip.rs` checks against
//! upstream's numbering; message names as upstream's generated Go uses
//! them, e.g. `CheckpointRequest`, `ExternalCheckpointConfiguration`).
//! No `.proto` file of upstream's is copied or compiled.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MessageOptions, MethodDescriptorProto,
    OneofDescriptorProto, ServiceDescriptorProto,
};

/// The descriptor's file name (upstream's path of its definition).
pub const FILE: &str = "internal/proto/ateletpb/atelet.proto";

/// A field: name, number, type, type name (for messages and enums).
struct F {
    name: &'static str,
    number: i32,
    typ: Type,
    type_name: Option<&'static str>,
    repeated: bool,
    oneof: Option<i32>,
}

fn s(name: &'static str, number: i32) -> F {
    F {
        name,
        number,
        typ: Type::String,
        type_name: None,
        repeated: false,
        oneof: None,
    }
}

fn m(name: &'static str, number: i32, type_name: &'static str) -> F {
    F {
        name,
        number,
        typ: Type::Message,
        type_name: Some(type_name),
        repeated: false,
        oneof: None,
    }
}

fn e(name: &'static str, number: i32, type_name: &'static str) -> F {
    F {
        typ: Type::Enum,
        ..m(name, number, type_name)
    }
}

fn rep(mut f: F) -> F {
    f.repeated = true;
    f
}

fn in_oneof(mut f: F, index: i32) -> F {
    f.oneof = Some(index);
    f
}

fn json_name(name: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn field(f: F) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(f.name.into()),
        number: Some(f.number),
        label: Some(if f.repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(f.typ as i32),
        type_name: f.type_name.map(|t| format!(".atelet.{t}")),
        oneof_index: f.oneof,
        json_name: Some(json_name(f.name)),
        ..Default::default()
    }
}

fn message(name: &str, fields: Vec<F>) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.into()),
        field: fields.into_iter().map(field).collect(),
        ..Default::default()
    }
}

/// A `map<string, V>` field `name` of message `owner`: the repeated field
/// and its nested `<Name>Entry` type (as protoc writes maps).
fn with_map(
    mut msg: DescriptorProto,
    name: &'static str,
    number: i32,
    value: &'static str,
) -> DescriptorProto {
    let owner = msg.name.clone().unwrap_or_default();
    let entry_name = format!("{}Entry", json_name(&format!("_{name}")));
    let mut entry = message(&entry_name, vec![s("key", 1), m("value", 2, value)]);
    entry.options = Some(MessageOptions {
        map_entry: Some(true),
        ..Default::default()
    });
    msg.nested_type.push(entry);
    msg.field.push(FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Repeated as i32),
        r#type: Some(Type::Message as i32),
        type_name: Some(format!(".atelet.{owner}.{entry_name}")),
        json_name: Some(json_name(name)),
        ..Default::default()
    });
    msg
}

fn enumeration(name: &str, values: &[(&str, i32)]) -> EnumDescriptorProto {
    EnumDescriptorProto {
        name: Some(name.into()),
        value: values
            .iter()
            .map(|(n, v)| EnumValueDescriptorProto {
                name: Some((*n).into()),
                number: Some(*v),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn snapshot_request(name: &str) -> DescriptorProto {
    let mut d = message(
        name,
        vec![
            s("target_ateom_uid", 1),
            s("actor_template_namespace", 3),
            s("actor_template_name", 4),
            s("actor_id", 5),
            m("spec", 7, "WorkloadSpec"),
            e("type", 9, "CheckpointType"),
            in_oneof(m("local_config", 10, "LocalCheckpointConfiguration"), 0),
            in_oneof(
                m("external_config", 11, "ExternalCheckpointConfiguration"),
                0,
            ),
            e("scope", 12, "SnapshotScope"),
        ],
    );
    d.oneof_decl.push(OneofDescriptorProto {
        name: Some("config".into()),
        ..Default::default()
    });
    d
}

/// The file: package `atelet`, service `AteomHerder`.
pub fn file() -> FileDescriptorProto {
    let mut volume = message(
        "Volume",
        vec![
            s("name", 1),
            e("type", 2, "VolumeType"),
            in_oneof(m("durable_dir", 3, "DurableDirVolume"), 0),
        ],
    );
    volume.oneof_decl.push(OneofDescriptorProto {
        name: Some("source".into()),
        ..Default::default()
    });
    let messages = vec![
        message(
            "RunRequest",
            vec![
                s("target_ateom_uid", 1),
                s("actor_template_namespace", 3),
                s("actor_template_name", 4),
                s("actor_id", 5),
                m("spec", 7, "WorkloadSpec"),
                m("sandbox_assets", 9, "SandboxAssets"),
            ],
        ),
        message("AssetFile", vec![s("url", 1), s("sha256", 2)]),
        with_map(message("ArchAssets", vec![]), "files", 1, "AssetFile"),
        with_map(
            message("SandboxAssets", vec![s("sandbox_class", 1)]),
            "assets",
            2,
            "ArchAssets",
        ),
        message(
            "WorkloadSpec",
            vec![
                rep(m("containers", 1, "Container")),
                s("pause_image", 2),
                rep(m("volumes", 3, "Volume")),
            ],
        ),
        message("DurableDirVolume", vec![]),
        volume,
        message("VolumeMount", vec![s("name", 1), s("mount_path", 2)]),
        message(
            "Container",
            vec![
                s("name", 1),
                s("image", 2),
                rep(s("command", 3)),
                rep(m("env", 4, "EnvEntry")),
                m("readyz", 5, "Readyz"),
                rep(m("volume_mounts", 6, "VolumeMount")),
            ],
        ),
        message("EnvEntry", vec![s("name", 1), s("value", 2)]),
        message("Readyz", vec![m("http_get", 1, "HTTPGetAction")]),
        message(
            "HTTPGetAction",
            vec![
                s("path", 1),
                F {
                    typ: Type::Int32,
                    ..s("port", 2)
                },
            ],
        ),
        message("RunResponse", vec![]),
        message(
            "LocalCheckpointConfiguration",
            vec![s("snapshot_prefix", 1)],
        ),
        message(
            "ExternalCheckpointConfiguration",
            vec![s("snapshot_uri_prefix", 1)],
        ),
        snapshot_request("CheckpointRequest"),
        message("CheckpointResponse", vec![]),
        snapshot_request("RestoreRequest"),
        message("RestoreResponse", vec![]),
    ];
    let enums = vec![
        enumeration(
            "VolumeType",
            &[
                ("VOLUME_TYPE_UNSPECIFIED", 0),
                ("VOLUME_TYPE_DURABLE_DIR", 1),
            ],
        ),
        enumeration(
            "CheckpointType",
            &[
                ("CHECKPOINT_TYPE_UNSPECIFIED", 0),
                ("CHECKPOINT_TYPE_LOCAL", 1),
                ("CHECKPOINT_TYPE_EXTERNAL", 2),
            ],
        ),
        enumeration(
            "SnapshotScope",
            &[
                ("SNAPSHOT_SCOPE_UNSPECIFIED", 0),
                ("SNAPSHOT_SCOPE_FULL", 1),
                ("SNAPSHOT_SCOPE_DATA", 2),
            ],
        ),
    ];
    let method = |name: &str, input: &str, output: &str| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(format!(".atelet.{input}")),
        output_type: Some(format!(".atelet.{output}")),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some(FILE.into()),
        package: Some("atelet".into()),
        message_type: messages,
        enum_type: enums,
        service: vec![ServiceDescriptorProto {
            name: Some("AteomHerder".into()),
            method: vec![
                method("Run", "RunRequest", "RunResponse"),
                method("Checkpoint", "CheckpointRequest", "CheckpointResponse"),
                method("Restore", "RestoreRequest", "RestoreResponse"),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// The set the reflection service serves.
pub fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet { file: vec![file()] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type a field or method names is defined in the file, and the
    /// request messages carry the numbers the client encodes.
    #[test]
    fn the_descriptor_is_closed_and_numbered_as_the_api() {
        let f = file();
        let mut defined = std::collections::HashSet::new();
        for msg in &f.message_type {
            defined.insert(format!(".atelet.{}", msg.name()));
            for n in &msg.nested_type {
                defined.insert(format!(".atelet.{}.{}", msg.name(), n.name()));
            }
        }
        for en in &f.enum_type {
            defined.insert(format!(".atelet.{}", en.name()));
        }
        for msg in &f.message_type {
            for fld in msg
                .field
                .iter()
                .chain(msg.nested_type.iter().flat_map(|n| n.field.iter()))
            {
                if let Some(t) = &fld.type_name {
                    assert!(
                        defined.contains(t),
                        "{}.{} names undefined {t}",
                        msg.name(),
                        fld.name()
                    );
                }
            }
        }
        for m in &f.service[0].method {
            assert!(defined.contains(m.input_type()) && defined.contains(m.output_type()));
        }
        let numbers = |name: &str| -> Vec<i32> {
            let msg = f.message_type.iter().find(|m| m.name() == name).unwrap();
            msg.field.iter().map(|f| f.number()).collect()
        };
        assert_eq!(numbers("RunRequest"), [1, 3, 4, 5, 7, 9]);
        assert_eq!(numbers("CheckpointRequest"), [1, 3, 4, 5, 7, 9, 10, 11, 12]);
        assert_eq!(numbers("Container"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(numbers("WorkloadSpec"), [1, 2, 3]);
        let sa = f
            .message_type
            .iter()
            .find(|m| m.name() == "SandboxAssets")
            .unwrap();
        assert_eq!(sa.field[1].type_name(), ".atelet.SandboxAssets.AssetsEntry");
        // It serves: the builder accepts it.
        tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(descriptor_set())
            .build_v1()
            .unwrap();
    }
}
