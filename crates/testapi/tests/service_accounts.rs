//! A ServiceAccount's token holds what its RoleBindings grant: the rules of the Roles bound to
//! it in its namespace, nothing from bindings to others, nothing in other namespaces.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use litemaas_testapi::TestApiServer;
use serde_json::json;

const NS: &str = "litemaas";
const RBAC: &str = "rbac.authorization.k8s.io";

async fn server() -> TestApiServer {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace(NS).unwrap();
    server.create_namespace("other").unwrap();
    for ns in [NS, "other"] {
        for name in ["litemaas-db", "unrelated"] {
            server
                .create("", "secrets", ns, json!({"metadata": {"name": name}}))
                .unwrap();
        }
    }
    for sa in ["backup", "someone-else"] {
        server
            .create("", "serviceaccounts", NS, json!({"metadata": {"name": sa}}))
            .unwrap();
    }
    server
        .create(RBAC, "roles", NS, json!({"metadata": {"name": "read-db"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["litemaas-db"]}]}))
        .unwrap();
    server
        .create(
            RBAC,
            "roles",
            NS,
            json!({"metadata": {"name": "read-all"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
        )
        .unwrap();
    server
        .create(
            RBAC,
            "rolebindings",
            NS,
            json!({"metadata": {"name": "backup"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "read-db"},
            "subjects": [{"kind": "ServiceAccount", "name": "backup", "namespace": NS}]}),
        )
        .unwrap();
    server
        .create(
            RBAC,
            "rolebindings",
            NS,
            json!({"metadata": {"name": "someone-else"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "read-all"},
            "subjects": [{"kind": "ServiceAccount", "name": "someone-else", "namespace": NS}]}),
        )
        .unwrap();
    server
}

#[tokio::test]
async fn a_service_account_token_holds_exactly_its_bound_roles_rules() {
    let server = server().await;
    let token = server.service_account_token(NS, "backup").unwrap();
    let client = server.client_with_token(&token, NS).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets.get("litemaas-db").await.unwrap();
    let denied = secrets.get("unrelated").await.unwrap_err().to_string();
    assert!(
        denied.contains("system:serviceaccount:litemaas:backup") && denied.contains("forbidden"),
        "{denied}"
    );
    // someone-else's binding grants list, not to this account.
    assert!(secrets.list(&Default::default()).await.is_err());
    // Nothing in another namespace.
    let other: Api<Secret> = Api::namespaced(client, "other");
    assert!(other.get("litemaas-db").await.is_err());
}

#[tokio::test]
async fn rules_are_read_when_the_token_is_issued() {
    let server = server().await;
    let before = server.service_account_token(NS, "backup").unwrap();
    server.delete(RBAC, "rolebindings", NS, "backup").unwrap();
    let after = server.service_account_token(NS, "backup").unwrap();
    let get = |token: String| {
        let server = &server;
        async move {
            let client = server.client_with_token(&token, NS).await.unwrap();
            Api::<Secret>::namespaced(client, NS)
                .get("litemaas-db")
                .await
        }
    };
    assert!(get(before).await.is_ok());
    assert!(get(after).await.is_err());
}

#[tokio::test]
async fn no_token_for_a_missing_service_account() {
    let server = server().await;
    let e = server.service_account_token(NS, "nobody").unwrap_err();
    assert!(
        format!("{e:#}").contains("ServiceAccount litemaas/nobody"),
        "{e:#}"
    );
}
