//! kube-rs, the Rust client our own controllers will use, against the API server: paginated
//! lists, a watcher that survives an API server restart and a 410, and 409 on a stale
//! update.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};

use crate::apiserver::Api as ApiServer;
use crate::etcd::Kind;

async fn client(api: &ApiServer) -> Client {
    let kc = Kubeconfig::read_from(api.etcd.data.file("credentials/client.config")).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.cluster_url = api.server().parse().unwrap();
    Client::try_from(config).unwrap()
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn kube_rs_lists_pages_watches_across_restarts_and_conflicts(kind: Kind) {
    let mut api = ApiServer::start(kind);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cms: Api<ConfigMap> = rt.block_on(async {
        let c = client(&api).await;
        Api::namespaced(c, "default")
    });

    rt.block_on(async {
        for i in 0..12 {
            cms.create(&PostParams::default(), &cm(&format!("p{i:02}")))
                .await
                .unwrap();
        }
        // Pagination by hand, following `continue`.
        let mut names = Vec::new();
        let mut lp = ListParams::default().limit(5);
        loop {
            let page = cms.list(&lp).await.unwrap();
            names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        assert_eq!(names.len(), 12, "{names:?}");

        // Optimistic concurrency: an update with a stale resourceVersion is a 409.
        let mut first = cms.get("p00").await.unwrap();
        let mut second = first.clone();
        first.data = Some([("k".to_string(), "1".to_string())].into());
        cms.replace("p00", &PostParams::default(), &first)
            .await
            .unwrap();
        second.data = Some([("k".to_string(), "2".to_string())].into());
        match cms.replace("p00", &PostParams::default(), &second).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("expected 409, got {other:?}"),
        }
    });

    // A watch from resourceVersion 0 starts with every object as ADDED, however many.
    rt.block_on(async {
        let many: Api<ConfigMap> = Api::namespaced(cms.clone().into_client(), "kube-public");
        let creates = (0..300).map(|i| {
            let many = many.clone();
            async move {
                many.create(&PostParams::default(), &cm(&format!("m{i:03}")))
                    .await
            }
        });
        for r in futures::future::join_all(creates).await {
            r.unwrap();
        }
        let mut stream = many
            .watch(&kube::api::WatchParams::default().timeout(3), "0")
            .await
            .unwrap()
            .boxed();
        let mut added = 0;
        while let Some(ev) = stream.next().await {
            if let Ok(kube::api::WatchEvent::Added(_)) = ev {
                added += 1;
            }
        }
        assert_eq!(added, 300);
    });

    // A watcher sees later objects across a restart whose resume point was compacted (410).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watch_api = cms.clone();
    let task = rt.spawn(async move {
        let mut s = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                && let Some(n) = o.metadata.name
            {
                let _ = tx.send(n);
            }
        }
    });
    let wait_for = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(n) = rx.recv().await {
                    if n == name {
                        return;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the watcher never saw {name}"))
        })
    };
    rt.block_on(async {
        cms.create(&PostParams::default(), &cm("before"))
            .await
            .unwrap();
    });
    wait_for(&mut rx, "before");
    api.stop();
    // Advance and compact the store past the watcher's resume point.
    for i in 0..3 {
        assert!(
            api.etcd
                .etcdctl(&["put", &format!("/unrelated/{i}"), "x"])
                .status
                .success()
        );
    }
    let status = api.etcd.ctl(&["endpoint", "status", "-w", "json"]);
    let rev = serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["Status"]["header"]
        ["revision"]
        .as_i64()
        .unwrap();
    assert!(
        api.etcd
            .etcdctl(&["compact", &rev.to_string()])
            .status
            .success()
    );
    api.restart();
    rt.block_on(async {
        cms.create(&PostParams::default(), &cm("after"))
            .await
            .unwrap();
    });
    wait_for(&mut rx, "after");
    task.abort();
}

crate::apiserver::on_both_stores!(kube_rs_lists_pages_watches_across_restarts_and_conflicts);
