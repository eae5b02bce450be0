//! mk8s integration tests: one binary, driving the built `mk8s` and the real `openssl`,
//! `kubectl` and rustls, each test in its own temporary data directory.

mod apiproxy;
mod apiserver;
mod bad_input;
mod bootstrap;
mod certs;
mod cluster;
mod controllers;
mod crash;
mod datastore;
mod datastore_client;
mod datastore_diff;
mod dns;
mod etcd;
mod jobs;
mod kube_client;
mod kubeconfig;
mod kubelet_api;
mod pod_edges;
mod pods;
mod probes;
mod proxy;
mod rbac;
mod refresh;
mod services;
mod sets;
mod supervisor;
mod tls;
mod util;
mod workloads;
