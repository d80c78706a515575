"""Two SecretProviderClasses in one pod (upstream e2e-provider.bats 21-23)."""

from __future__ import annotations

from nodekit import MOCK_KEY, app_pod_spec, secret_env, spc, wait_for, wait_pod_ready
from nodesetup import Installation


def test_two_spcs_in_one_pod(installation: Installation, ns: str) -> None:
    kube = installation.kube
    for i in (0, 1):
        kube.apply(
            spc(
                f"e2e-provider-spc-{i}",
                secret_objects=[
                    {
                        "secretName": f"foosecret-{i}",
                        "type": "Opaque",
                        "labels": {"environment": "test"},
                        "data": [{"objectName": "foo", "key": "username"}],
                    }
                ],
            ),
            ns,
        )
    spec = app_pod_spec(
        [(f"secrets-store-inline-{i}", f"e2e-provider-spc-{i}", f"/mnt/secrets-store-{i}") for i in (0, 1)],
        env=[secret_env(f"SECRET_USERNAME_{i}", f"foosecret-{i}", "username") for i in (0, 1)],
    )
    name = "secrets-store-inline-multiple-crd"
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, ns)
    wait_pod_ready(kube, name, ns)
    for i in (0, 1):
        assert kube.exec(name, ns, "cat", f"/mnt/secrets-store-{i}/foo") == "secret"
        assert MOCK_KEY in kube.exec(name, ns, "cat", f"/mnt/secrets-store-{i}/fookey")
        assert kube.secret_data(f"foosecret-{i}", ns) == {"username": "secret"}
        assert kube.exec(name, ns, "sh", "-c", f"echo $SECRET_USERNAME_{i}").strip() == "secret"
        wait_for(
            f"foosecret-{i} with 1 owner",
            lambda i=i: (
                len(kube.get("secret", f"foosecret-{i}", ns)["metadata"].get("ownerReferences") or []) == 1
            ),
            60,
        )
