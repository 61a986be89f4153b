//! Finding or creating the kind cluster, the way upstream's
//! `hack/create-kind-cluster.sh` does (registry, config, proxy ARP, node
//! registry hosts, the local-registry-hosting ConfigMap); see
//! `docs/upstream.md`.

use anyhow::{bail, Result};
use tracing::{info, warn};

use super::KindBackend;

impl KindBackend {
    pub(super) async fn ensure_cluster(&self) -> Result<()> {
        let name = &self.opts.cluster;
        // Stand-in: the named cluster is there, unless the run may create
        // one (then the dry run plans the creation).
        let listed = self
            .exec
            .run(
                &format!("is there a kind cluster named {name}?"),
                self.tools.kind_get_clusters(),
                &if self.opts.create_cluster {
                    String::new()
                } else {
                    format!("{name}\n")
                },
            )
            .await?;
        let clusters: Vec<&str> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if clusters.contains(&name.as_str()) {
            info!(cluster = %name, "reusing the kind cluster");
            return Ok(());
        }
        if !self.opts.create_cluster {
            bail!(
                "there is no kind cluster named {name:?} (kind get clusters: {}); run Agent Substrate's kind install first, or pass --create-cluster to create an empty one",
                if clusters.is_empty() { "none".to_owned() } else { clusters.join(", ") }
            );
        }
        // Stand-in: no such container (`docker inspect` fails), so the dry
        // run plans creating it.
        let inspected = self
            .exec
            .run_or(
                "is the local registry container kind-registry running?",
                self.tools.registry_inspect(),
                || {
                    anyhow::bail!(
                        "no container {} (assumed absent)",
                        super::tools::REGISTRY_CONTAINER
                    )
                },
            )
            .await;
        match inspected.as_deref().map(str::trim) {
            Ok("true") => {}
            // There, but stopped: someone else's; started, never removed.
            Ok(_) => {
                self.exec
                    .run(
                        "start the stopped local registry kind-registry",
                        self.tools.registry_start(),
                        "",
                    )
                    .await?;
            }
            // Not there: this run makes it. Marked before it runs, so an
            // interrupt or failure midway still removes it.
            Err(_) => {
                self.update(|st| st.created_registry = true);
                self.exec
                    .run(
                        "start the local registry kind-registry on 127.0.0.1:5001",
                        self.tools.registry_run(),
                        "",
                    )
                    .await?;
            }
        }
        let config = self.opts.fixtures_dir.join("kind/cluster.yaml");
        // Marked before it runs, for the same reason (`kind delete cluster`
        // of a missing cluster succeeds).
        self.update(|st| st.created_cluster = true);
        self.exec
            .run(
                &format!("create the kind cluster {name} (this run deletes it at the end)"),
                self.tools.kind_create_cluster(name, &config),
                "",
            )
            .await?;
        if let Err(e) = self
            .exec
            .run(
                "connect kind-registry to the kind network",
                self.tools.registry_connect(),
                "",
            )
            .await
        {
            // Already connected is fine; anything else shows up when nodes
            // cannot pull.
            warn!("{e:#}");
        }
        // Stand-in: kind's one control-plane node, as the fixture makes.
        let nodes = self
            .exec
            .run(
                "list the cluster's nodes",
                self.tools.kind_get_nodes(name),
                &format!("{name}-control-plane\n"),
            )
            .await?;
        for node in nodes.lines().map(str::trim).filter(|n| !n.is_empty()) {
            self.exec
                .run(
                    &format!("make the registry config directory on node {node}"),
                    self.tools.node_registry_dir(node),
                    "",
                )
                .await?;
            self.exec
                .run(
                    &format!("point node {node} at kind-registry:5000 for localhost:5001"),
                    self.tools.node_registry_hosts(node),
                    "",
                )
                .await?;
            self.exec
                .run(
                    &format!(
                        "enable proxy ARP on node {node} (gVisor loopback pod-to-pod networking)"
                    ),
                    self.tools.node_proxy_arp(node),
                    "",
                )
                .await?;
        }
        self.exec
            .run(
                "document the local registry (ConfigMap kube-public/local-registry-hosting)",
                self.tools.registry_hosting_configmap(),
                "",
            )
            .await?;
        Ok(())
    }
}
