#!/usr/bin/env python3
"""Generates src/apiserver/pbschema.rs: the field tables the API server needs to read
Kubernetes protobuf bodies as JSON, derived from the k8s-pb crate's generated prost types.

Usage: tools/gen_pbschema.py [K8S_PB_SRC_DIR] > src/apiserver/pbschema.rs
(default: the k8s-pb 0.9.0 sources in the cargo registry).

Each prost field carries its wire type and tag; its JSON name is the camel-cased Rust name
with Kubernetes' upper-case words restored (podIP, containerID, nonResourceURLs…).
"""
import glob
import os
import re
import sys

PACKAGES = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/coordination/v1",
    "api/discovery/v1", "api/events/v1", "api/networking/v1", "api/node/v1",
    "api/policy/v1", "api/rbac/v1", "api/scheduling/v1", "api/storage/v1",
    "api/certificates/v1", "api/authentication/v1", "api/authorization/v1",
    "api/autoscaling/v1",
    "apimachinery/pkg/apis/meta/v1", "apimachinery/pkg/runtime",
    "apimachinery/pkg/util/intstr", "apimachinery/pkg/api/resource",
]

# Words Kubernetes spells in capitals inside JSON names (after the first word).
UPPER = {"ip": "IP", "ips": "IPs", "id": "ID", "uid": "UID", "uuid": "UUID", "uri": "URI",
         "url": "URL", "cidr": "CIDR", "ipc": "IPC", "pid": "PID", "tls": "TLS", "cpu": "CPU",
         "io": "IO", "api": "API", "fqdn": "FQDN"}
# prost splits some plurals oddly (podCIDRs -> pod_cid_rs).
PAIRS = {("cid", "rs"): "CIDRs", ("ur", "ls"): "URLs", ("ww", "ns"): "WWNs"}
# Fields whose proto name does not camel-case to their JSON name.
RENAMED = {("BoundObjectReference", "u_id"): "uid", ("DaemonEndpoint", "port"): "Port",
           ("IngressClassParametersReference", "a_pi_group"): "apiGroup"}
# Go structs embedded with `json:",inline"`: their fields appear in the parent object.
INLINE = {"volume_source", "persistent_volume_source", "ephemeral_container_common",
          "ingress_rule_value", "local_object_reference"}
# Inline embeddings whose field name is used elsewhere for a plain field (RuntimeClass.handler).
INLINE_IN = {("Probe", "handler")}


def json_name(rust):
    rust = rust.removeprefix("r#")
    words = rust.split("_")
    out = [words[0]]
    i = 1
    while i < len(words):
        pair = tuple(words[i:i + 2])
        if pair in PAIRS:
            out.append(PAIRS[pair])
            i += 2
            continue
        w = words[i]
        out.append(UPPER.get(w, w[:1].upper() + w[1:]))
        i += 1
    return "".join(out)


def resolve(module, rust_type):
    """Full module path of a message type named from `module` (a list of path parts)."""
    t = rust_type.strip()
    parts = t.split("::")
    base = list(module)
    while parts and parts[0] == "super":
        base.pop()
        parts.pop(0)
    return "::".join(base + parts)


FIELD_ATTR = re.compile(r'#\[prost\(([^)]*)\)\]')
FIELD = re.compile(r'pub ([a-z0-9_#]+): (.*),$')


def parse(src, pkg):
    module = pkg.split("/")
    text = open(os.path.join(src, pkg, "mod.rs")).read()
    messages = {}
    current = None
    attr = None
    doc = []
    field_doc = ""
    docs = {}
    # rustfmt wraps long field types; join a field onto one line.
    lines = []
    pending = None
    for line in text.splitlines():
        s = line.strip()
        if pending is not None:
            pending += s
            if s.endswith(",") and pending.count("<") == pending.count(">"):
                lines.append(pending)
                pending = None
            continue
        if s.startswith("pub ") and not s.startswith("pub struct") and not s.endswith(",") \
                and not s.endswith("{"):
            pending = s + " " if s.endswith(":") else s
            continue
        lines.append(s)
    for s in lines:
        if s.startswith("///"):
            doc.append(s[3:].removeprefix(" "))
            continue
        m = re.match(r'pub struct (\w+) \{', s)
        if m:
            current = "::".join(module + [m.group(1)])
            messages[current] = []
            docs[current] = clean_doc(doc)
            doc = []
            continue
        if s.startswith("#[derive"):
            continue
        if s == "}":
            current = None
            continue
        if current is None:
            continue
        m = FIELD_ATTR.match(s)
        if m:
            attr = m.group(1)
            field_doc = clean_doc(doc)
            doc = []
            continue
        m = FIELD.match(s)
        if m and attr is not None:
            name, ty = m.group(1), re.sub(r"\s+", "", m.group(2)).replace(",>", ">")
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            repeated = "repeated" in attr
            kind = attr.split(",")[0].split("=")[0].strip()
            if kind == "message":
                inner = re.sub(r'^(::core::option::Option|::prost::alloc::vec::Vec)<(.*)>$', r'\2', ty)
                k = ("Msg", resolve(module, inner))
            elif kind == "btree_map":
                vt = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                if vt == "message":
                    inner = re.search(r'BTreeMap<[^,]+,(.*)>$', ty).group(1)
                    k = ("MapMsg", resolve(module, inner))
                else:
                    k = ({"string": "MapStr", "bytes": "MapBytes"}[vt], None)
            elif kind == "double":
                # No served kind has one; the decoder skips unknown fields.
                attr = None
                continue
            else:
                k = ({"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "Int32",
                      "int64": "Int64"}[kind], None)
            js = RENAMED.get((current.rsplit("::", 1)[-1], name), json_name(name))
            messages[current].append((tag, js, k, repeated,
                                      name in INLINE or (current.rsplit("::", 1)[-1], name) in INLINE_IN,
                                      field_doc))
            attr = None
            continue
        doc = []
    return messages, docs


def clean_doc(lines):
    """Go doc comment as OpenAPI descriptions show it: no `+tag` lines, paragraphs joined."""
    kept = [l for l in lines if not l.lstrip().startswith("+") and not l.lstrip().startswith("TODO")]
    text = "\n".join(kept).strip()
    return re.sub(r"(?<!\n)\n(?!\n)", " ", text)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/k8s-pb-0.9.0/src")))[-1]
    messages = {}
    docs = {}
    for pkg in PACKAGES:
        m, d = parse(src, pkg)
        messages.update(m)
        docs.update(d)
    names = sorted(messages)
    index = {n: i for i, n in enumerate(names)}
    out = []
    out.append("//! Field tables of the Kubernetes protobuf messages the API server reads, generated by")
    out.append("//! `tools/gen_pbschema.py` from the k8s-pb crate's prost types. Do not edit by hand.")
    out.append("")
    out.append("use super::protobuf::{Field, Kind, Message};")
    out.append("")
    out.append("#[rustfmt::skip]")
    out.append("pub static MESSAGES: &[Message] = &[")
    for n in names:
        short = n.replace("::", ".")
        fields = []
        for tag, js, (k, target), rep, inline, fdoc in messages[n]:
            if target is not None:
                if target not in index:
                    continue
                kind = f"Kind::{k}({index[target]})"
            else:
                kind = f"Kind::{k}"
            fields.append(f"Field {{ tag: {tag}, json: \"{js}\", kind: {kind}, repeated: {str(rep).lower()}, inline: {str(inline).lower()}, doc: {rust_str(fdoc)} }}")
        out.append(f"    Message {{ name: \"{short}\", doc: {rust_str(docs.get(n, ''))}, fields: &[")
        for f in fields:
            out.append(f"        {f},")
        out.append("    ] },")
    out.append("];")
    print("\n".join(out))


if __name__ == "__main__":
    main()
