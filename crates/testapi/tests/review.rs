//! SelfSubjectAccessReview and SelfSubjectReview: answered from the calling token's RBAC rules,
//! as a real API server answers them, with `kubectl auth can-i` / `kubectl auth whoami` as
//! independent witnesses.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use litemaas_testapi::{Identity, Rule, TestApiServer};

const NS: &str = "litemaas";
const USER: &str = "system:serviceaccount:litemaas:litemaas-backup";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    Rule {
        api_groups: own(groups),
        resources: own(resources),
        verbs: own(verbs),
        resource_names: own(names),
    }
}

/// A token bound by a Role in `litemaas`: get (not create) on pods/exec, get on one Secret,
/// everything on leases, and `update` on every scale subresource.
async fn server() -> TestApiServer {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace(NS).unwrap();
    server.add_token(
        "backup-token",
        Identity {
            user: USER.into(),
            namespace: Some(NS.into()),
            rules: vec![
                rule(&[""], &["pods/exec"], &["get"], &[]),
                rule(&[""], &["pods"], &["list"], &[]),
                rule(&[""], &["secrets"], &["get"], &["litemaas-db"]),
                rule(&["coordination.k8s.io"], &["*"], &["*"], &[]),
                rule(&["apps"], &["*/scale"], &["update"], &[]),
            ],
        },
    );
    server
}

async fn may(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: sub.map(str::to_owned),
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread")]
async fn access_reviews_follow_the_tokens_rules_by_verb_subresource_namespace_and_name() {
    let server = server().await;
    let client = server.client_with_token("backup-token", NS).await.unwrap();
    let ns = Some(NS);
    // Subresource and verb: get on pods/exec is granted, create is not, and pods/exec is not pods.
    assert!(may(&client, "get", "", "pods", Some("exec"), ns, Some("db-0")).await);
    assert!(
        !may(
            &client,
            "create",
            "",
            "pods",
            Some("exec"),
            ns,
            Some("db-0")
        )
        .await
    );
    assert!(!may(&client, "get", "", "pods", None, ns, Some("db-0")).await);
    assert!(may(&client, "list", "", "pods", None, ns, None).await);
    assert!(!may(&client, "get", "", "pods", Some("log"), ns, None).await);
    // A Role binds in its namespace only, and never at the cluster scope.
    assert!(!may(&client, "list", "", "pods", None, Some("other"), None).await);
    assert!(!may(&client, "list", "", "pods", None, None, None).await);
    // resourceNames: that name only, and not a request without a name.
    assert!(may(&client, "get", "", "secrets", None, ns, Some("litemaas-db")).await);
    assert!(!may(&client, "get", "", "secrets", None, ns, Some("other")).await);
    assert!(!may(&client, "get", "", "secrets", None, ns, None).await);
    // Groups and wildcards: `*` resources in a group; `*/scale` matches any scale subresource.
    assert!(
        may(
            &client,
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            ns,
            None
        )
        .await
    );
    assert!(!may(&client, "update", "", "leases", None, ns, None).await);
    assert!(
        may(
            &client,
            "update",
            "apps",
            "statefulsets",
            Some("scale"),
            ns,
            None
        )
        .await
    );
    assert!(
        !may(
            &client,
            "patch",
            "apps",
            "statefulsets",
            Some("scale"),
            ns,
            None
        )
        .await
    );
    assert!(!may(&client, "update", "apps", "statefulsets", None, ns, None).await);
    // The administrator may do anything.
    let admin = server.client().await.unwrap();
    assert!(may(&admin, "create", "", "pods", Some("exec"), ns, None).await);
    assert!(may(&admin, "patch", "", "persistentvolumes", None, None, None).await);

    // kubectl reads the answers too (it sends the review as protobuf). It sends no bearer
    // token over plain http, so it is the administrator here: everything is allowed.
    let can_i = |args: &[&str]| {
        let out = server
            .kubectl()
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            answer,
            "yes",
            "kubectl auth can-i {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    can_i(&["create", "pods", "--subresource=exec", "-n", NS]);
    can_i(&["delete", "leases.coordination.k8s.io", "-n", NS]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_token_is_unauthorized_and_a_review_without_attributes_is_invalid() {
    let server = server().await;
    let stranger = server.client_with_token("nobody", NS).await.unwrap();
    let err = Api::<SelfSubjectAccessReview>::all(stranger.clone())
        .create(&PostParams::default(), &SelfSubjectAccessReview::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err}"
    );
    let err = Api::<SelfSubjectReview>::all(stranger)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err}"
    );

    let client = server.client_with_token("backup-token", NS).await.unwrap();
    let err = Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectAccessReview::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_review_names_the_tokens_user_and_groups() {
    let server = server().await;
    let client = server.client_with_token("backup-token", NS).await.unwrap();
    let me = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some(USER));
    let groups = info.groups.unwrap();
    assert!(groups.contains(&"system:serviceaccounts:litemaas".to_owned()));
    assert!(groups.contains(&"system:authenticated".to_owned()));

    let admin = Api::<SelfSubjectReview>::all(server.client().await.unwrap())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    assert_eq!(
        admin.status.unwrap().user_info.unwrap().username.as_deref(),
        Some(litemaas_testapi::ADMIN_USER)
    );

    // kubectl's `auth whoami` reads the answer (as the administrator: it sends no bearer
    // token over plain http), and discovery lists both reviews.
    let out = server
        .kubectl()
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        litemaas_testapi::ADMIN_USER
    );
    let out = server
        .kubectl()
        .args(["api-resources", "--no-headers"])
        .output()
        .unwrap();
    let resources = String::from_utf8_lossy(&out.stdout);
    for want in ["selfsubjectaccessreviews", "selfsubjectreviews"] {
        assert!(
            resources.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{resources}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_needs_both_get_and_create_on_pods_exec_as_from_kubernetes_1_35() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::AttachParams;
    use serde_json::json;

    let server = TestApiServer::start().await.unwrap();
    server.create_namespace(NS).unwrap();
    server
        .create(
            "",
            "pods",
            NS,
            json!({"metadata": {"name": "db-0"}, "spec": {"containers": [{"name": "postgres"}]}}),
        )
        .unwrap();
    for (token, verbs) in [
        ("get-only", vec!["get"]),
        ("create-only", vec!["create"]),
        ("both", vec!["get", "create"]),
    ] {
        server.add_token(
            token,
            Identity {
                user: format!("system:serviceaccount:{NS}:{token}"),
                namespace: Some(NS.into()),
                rules: vec![rule(&[""], &["pods/exec"], &verbs, &[])],
            },
        );
        let pods: Api<Pod> =
            Api::namespaced(server.client_with_token(token, NS).await.unwrap(), NS);
        let attached = pods
            .exec(
                "db-0",
                ["true"],
                &AttachParams::default().stdout(true).stderr(false),
            )
            .await;
        match attached {
            Ok(mut process) => {
                assert_eq!(token, "both", "{token} may exec");
                let status = process.take_status().unwrap().await.unwrap();
                assert_eq!(status.status.as_deref(), Some("Success"));
            }
            Err(e) => {
                assert_ne!(token, "both", "{e}");
                assert!(
                    e.to_string().contains("403") || e.to_string().contains("Forbidden"),
                    "{e}"
                );
            }
        }
    }
}
