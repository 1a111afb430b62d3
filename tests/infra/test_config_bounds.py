"""The edges of every bounded stack setting, and the value a setting takes when it is left out.

A reviewer of `pulumi preview` trusts that a value the docs call valid is accepted and the first
one past it refused (with the key named), and that an unset key means its documented default: an
off-by-one in a bound (``<`` for ``<=``) or a changed default changes a real stack silently.
From the mutation check of issue 20 (docs/mutation.md): these were the survivors in
``parse_settings``, ``_service``, ``_autoscaling`` and ``_database``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.infra.test_config_rules import P, _DELETE, _error, _parse, _set

FEATURES, SCORING = f"{P}services.customer-features", f"{P}services.customer-scoring"


def _service(settings, service_id: str):
    return next(service for service in settings.services if service.id == service_id)


def _all(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        for one in edits:
            one(config)
    return edit


def _nodes(low: int, desired: int, high: int) -> Callable[[dict[str, Any]], None]:
    return _all(_set(f"{P}nodeGroup.minSize", low), _set(f"{P}nodeGroup.desiredSize", desired),
                _set(f"{P}nodeGroup.maxSize", high))


# (case id, stack, edit at the edge, what the settings then hold)
ACCEPTED = [
    ("vpc-16", "dev", _set(f"{P}vpcCidr", "10.20.0.0/16"), lambda s: s.network.cidr == "10.20.0.0/16"),
    ("vpc-20", "dev", _all(_set(f"{P}vpcCidr", "10.20.0.0/20"), _set(f"{P}exposure.clientCidrs", ["10.20.0.0/20"])),
     lambda s: s.network.cidr == "10.20.0.0/20"),
    ("zones-2", "dev", _set(f"{P}availabilityZones", 2), lambda s: s.network.availability_zones == 2),
    ("zones-6", "dev", _set(f"{P}availabilityZones", 6), lambda s: s.network.availability_zones == 6),
    ("nodes-all-1", "dev", _nodes(1, 1, 1),
     lambda s: (s.cluster.node_group.min_size, s.cluster.node_group.desired_size, s.cluster.node_group.max_size)
     == (1, 1, 1)),
    ("nodes-all-100", "dev", _nodes(100, 100, 100), lambda s: s.cluster.node_group.max_size == 100),
    ("nodes-desired-at-max", "dev", _nodes(1, 4, 4), lambda s: s.cluster.node_group.desired_size == 4),
    ("disk-20", "dev", _set(f"{P}nodeGroup.diskSizeGb", 20), lambda s: s.cluster.node_group.disk_size_gb == 20),
    ("disk-1000", "dev", _set(f"{P}nodeGroup.diskSizeGb", 1000),
     lambda s: s.cluster.node_group.disk_size_gb == 1000),
    ("keep-images-1", "dev", _set(f"{P}ecr.keepImages", 1), lambda s: s.registry.keep_images == 1),
    ("keep-images-1000", "dev", _set(f"{P}ecr.keepImages", 1000), lambda s: s.registry.keep_images == 1000),
    ("replicas-1", "dev", _set(f"{FEATURES}.replicas", 1), lambda s: _service(s, "customer-features").replicas == 1),
    ("replicas-100", "dev", _set(f"{FEATURES}.replicas", 100),
     lambda s: _service(s, "customer-features").replicas == 100),
    ("port-1024", "dev", _set(f"{FEATURES}.port", 1024), lambda s: _service(s, "customer-features").port == 1024),
    ("port-65535", "dev", _set(f"{FEATURES}.port", 65535),
     lambda s: _service(s, "customer-features").port == 65535),
    ("refresh-5", "prod", _set(f"{FEATURES}.refreshSeconds", 5),
     lambda s: _service(s, "customer-features").refresh_seconds == 5),
    ("refresh-86400", "prod", _set(f"{FEATURES}.refreshSeconds", 86400),
     lambda s: _service(s, "customer-features").refresh_seconds == 86400),
    ("max-replicas-equal-replicas", "prod", _set(f"{SCORING}.autoscaling.maxReplicas", 3),
     lambda s: _service(s, "customer-scoring").autoscaling.max_replicas == 3),
    ("max-replicas-100", "prod", _set(f"{SCORING}.autoscaling.maxReplicas", 100),
     lambda s: _service(s, "customer-scoring").autoscaling.max_replicas == 100),
    ("cpu-utilization-10", "prod", _set(f"{SCORING}.autoscaling.cpuUtilization", 10),
     lambda s: _service(s, "customer-scoring").autoscaling.cpu_utilization == 10),
    ("cpu-utilization-100", "prod", _set(f"{SCORING}.autoscaling.cpuUtilization", 100),
     lambda s: _service(s, "customer-scoring").autoscaling.cpu_utilization == 100),
    ("database-port-1", "prod", _set(f"{P}database.port", 1), lambda s: s.database.port == 1),
    ("database-port-65535", "prod", _set(f"{P}database.port", 65535), lambda s: s.database.port == 65535),
]

# (case id, stack, edit one past the edge, the key the message must name, the range it must give)
REFUSED = [
    ("vpc-15", "dev", _set(f"{P}vpcCidr", "10.20.0.0/15"), f"{P}vpcCidr", "between /16 and /20"),
    ("vpc-21", "dev", _set(f"{P}vpcCidr", "10.20.0.0/21"), f"{P}vpcCidr", "between /16 and /20"),
    ("zones-1", "dev", _set(f"{P}availabilityZones", 1), f"{P}availabilityZones", "between 2 and 6"),
    ("zones-7", "dev", _set(f"{P}availabilityZones", 7), f"{P}availabilityZones", "between 2 and 6"),
    ("min-size-0", "dev", _nodes(0, 1, 1), f"{P}nodeGroup.minSize", "between 1 and 100"),
    ("desired-size-0", "dev", _nodes(1, 0, 1), f"{P}nodeGroup.desiredSize", "between 1 and 100"),
    ("desired-size-101", "dev", _nodes(1, 101, 100), f"{P}nodeGroup.desiredSize", "between 1 and 100"),
    ("max-size-101", "dev", _nodes(1, 1, 101), f"{P}nodeGroup.maxSize", "between 1 and 100"),
    ("max-size-0", "dev", _nodes(1, 1, 0), f"{P}nodeGroup.maxSize", "between 1 and 100"),
    ("desired-above-max", "dev", _nodes(1, 3, 2), f"{P}nodeGroup.desiredSize", "between minSize (1) and maxSize (2)"),
    ("desired-below-min", "dev", _nodes(2, 1, 3), f"{P}nodeGroup.desiredSize", "between minSize (2) and maxSize (3)"),
    ("disk-19", "dev", _set(f"{P}nodeGroup.diskSizeGb", 19), f"{P}nodeGroup.diskSizeGb", "between 20 and 1000"),
    ("disk-1001", "dev", _set(f"{P}nodeGroup.diskSizeGb", 1001), f"{P}nodeGroup.diskSizeGb", "between 20 and 1000"),
    ("keep-images-0", "dev", _set(f"{P}ecr.keepImages", 0), f"{P}ecr.keepImages", "between 1 and 1000"),
    ("keep-images-1001", "dev", _set(f"{P}ecr.keepImages", 1001), f"{P}ecr.keepImages", "between 1 and 1000"),
    ("replicas-0", "dev", _set(f"{FEATURES}.replicas", 0), f"{FEATURES}.replicas", "between 1 and 100"),
    ("replicas-101", "dev", _set(f"{FEATURES}.replicas", 101), f"{FEATURES}.replicas", "between 1 and 100"),
    ("port-1023", "dev", _set(f"{FEATURES}.port", 1023), f"{FEATURES}.port", "between 1024 and 65535"),
    ("port-65536", "dev", _set(f"{FEATURES}.port", 65536), f"{FEATURES}.port", "between 1024 and 65535"),
    ("refresh-4", "prod", _set(f"{FEATURES}.refreshSeconds", 4), f"{FEATURES}.refreshSeconds", "between 5 and 86400"),
    ("refresh-86401", "prod", _set(f"{FEATURES}.refreshSeconds", 86401), f"{FEATURES}.refreshSeconds",
     "between 5 and 86400"),
    ("max-replicas-101", "prod", _set(f"{SCORING}.autoscaling.maxReplicas", 101), f"{SCORING}.autoscaling.maxReplicas",
     "between 1 and 100"),
    ("cpu-utilization-9", "prod", _set(f"{SCORING}.autoscaling.cpuUtilization", 9),
     f"{SCORING}.autoscaling.cpuUtilization", "between 10 and 100"),
    ("cpu-utilization-101", "prod", _set(f"{SCORING}.autoscaling.cpuUtilization", 101),
     f"{SCORING}.autoscaling.cpuUtilization", "between 10 and 100"),
    ("database-port-0", "prod", _set(f"{P}database.port", 0), f"{P}database.port", "between 1 and 65535"),
    ("database-port-65536", "prod", _set(f"{P}database.port", 65536), f"{P}database.port", "between 1 and 65535"),
]

# (case id, stack, the key removed, what the settings then hold: the documented default)
DEFAULTS = [
    ("disk-size", "dev", f"{P}nodeGroup.diskSizeGb", lambda s: s.cluster.node_group.disk_size_gb == 40),
    ("capacity-type", "dev", f"{P}nodeGroup.capacityType", lambda s: s.cluster.node_group.capacity_type == "ON_DEMAND"),
    ("admin-roles", "dev", f"{P}clusterAdminRoleArns", lambda s: tuple(s.cluster.admin_role_arns) == ()),
    ("keep-images", "dev", f"{P}ecr.keepImages", lambda s: s.registry.keep_images == 20),
    ("immutable-tags", "dev", f"{P}ecr.immutableTags", lambda s: s.registry.immutable_tags is True),
    ("force-delete", "dev", f"{P}ecr.forceDelete", lambda s: s.registry.force_delete is False),
    ("namespace", "dev", f"{P}namespace", lambda s: s.namespace == "data-mesh"),
    ("internal", "dev", f"{P}exposure.internal", lambda s: s.exposure.internal is True),
    ("ingress-class", "dev", f"{P}exposure.ingressClass", lambda s: s.exposure.ingress_class == "alb"),
    ("port", "dev", f"{FEATURES}.port", lambda s: _service(s, "customer-features").port == 8080),
    ("source", "dev", f"{FEATURES}.source", lambda s: _service(s, "customer-features").source == "bundled"),
    ("enrichment", "dev", f"{SCORING}.enrichment", lambda s: _service(s, "customer-scoring").enrichment == "remote"),
    ("sql-mode", "prod", f"{FEATURES}.sqlMode", lambda s: _service(s, "customer-features").sql_mode == "cached"),
    ("refresh-seconds", "prod", f"{FEATURES}.refreshSeconds",
     lambda s: _service(s, "customer-features").refresh_seconds == 300),
    ("cpu-utilization", "prod", f"{SCORING}.autoscaling.cpuUtilization",
     lambda s: _service(s, "customer-scoring").autoscaling.cpu_utilization == 70),
    ("database-port", "prod", f"{P}database.port", lambda s: s.database.port == 5432),
    ("ssl-mode", "prod", f"{P}database.sslMode", lambda s: s.database.ssl_mode == "verify-full"),
]


@pytest.mark.parametrize("stack,edit,holds", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_a_value_at_the_edge_of_its_range_is_accepted(stack: str, edit: Callable, holds: Callable,
                                                      tmp_path: Path) -> None:
    assert holds(_parse(stack, edit, tmp_path))


@pytest.mark.parametrize("stack,edit,key,words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_one_past_the_edge_is_refused_naming_the_key_and_its_range(stack: str, edit: Callable, key: str,
                                                                   words: str, tmp_path: Path) -> None:
    message = _error(stack, edit, tmp_path)
    assert f"'{key}'" in message and words in message, message


@pytest.mark.parametrize("stack,key,holds", [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_a_key_left_out_takes_its_documented_default(stack: str, key: str, holds: Callable, tmp_path: Path) -> None:
    assert holds(_parse(stack, _set(key, _DELETE), tmp_path))


def _fix_of(message: str) -> tuple[str, Any] | None:
    """The key and value of the message's ``Fix: pulumi config set [--path] KEY VALUE``, as the
    stack file would then hold it; None when the fix is not one concrete value."""
    import json
    import shlex

    if "Fix: pulumi config set " not in message or "--secret" in message:
        return None
    words = [word for word in shlex.split(message.split("Fix: ", 1)[1]) if word != "--path"]
    key, value = words[3], words[4]
    if "..." in value or value.startswith("<"):
        return None
    return key, json.loads(value) if value[:1] in "[{" else value


def _fix_cases():
    from tests.infra.test_config_rules import RULES

    cases = [(c[0], c[1], c[2]) for c in RULES] + [(c[0], c[1], c[2]) for c in REFUSED]
    return [pytest.param(stack, edit, id=case) for case, stack, edit in cases]


@pytest.mark.parametrize("stack,edit", _fix_cases())
def test_the_fix_a_message_gives_is_accepted_for_its_key(stack: str, edit: Callable, tmp_path: Path) -> None:
    """A user who runs the suggested `pulumi config set` gets past that key: the example shown is
    a value the key accepts, not a placeholder that fails the same way."""
    message = _error(stack, edit, tmp_path)
    fix = _fix_of(message)
    if fix is None:  # nothing to apply; the message must still say what to run
        assert any(kind in message for kind in ("pulumi config rm", "--secret", "...", "<")), message
        return
    key, value = fix
    try:
        _parse(stack, _all(edit, _set(key, value)), tmp_path)
    except Exception as error:  # noqa: BLE001 - the message is what is checked
        assert f"'{key}'" not in str(error), f"the fix {value!r} for {key} fails again: {error}"


# Where a stack file's key lands in the settings, when not at the snake_case of its own name.
_LANDS = {"vpcCidr": "network.cidr", "availabilityZones": "network.availability_zones",
          "natGateways": "network.nat_gateways", "kubernetesVersion": "cluster.kubernetes_version",
          "nodeGroup": "cluster.node_group", "clusterAdminRoleArns": "cluster.admin_role_arns",
          "publicEndpointCidrs": "cluster.public_endpoint_cidrs",
          "clusterLogRetentionDays": "cluster.log_retention_days", "ecr": "registry",
          "apiAccess.privateCidrs": "cluster.api_private_cidrs"}
# Keys read into other shapes, each checked by its own module's tests.
_ELSEWHERE = {"consumers": "tests/infra/test_zero_trust.py (parsed into mesh policies)",
              "baseImage": "tests/infra/test_promotion.py (a digest-pinned reference)",
              "promotion": "tests/infra/test_promotion.py (a stack reference)",
              "modelDispatch": "tests/infra/test_governance_config.py (weights per generation)",
              "database.caBundleFile": "tests/services/test_sql_tls.py (read as the file's contents)"}


def _snake(key: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _leaves(value: Any, path: list[str]):
    if isinstance(value, dict) and value and not (path and path[-1] == "tags"):
        for key, inner in value.items():
            yield from _leaves(inner, [*path, key])
    else:
        yield path, value


def _landed(settings, path: list[str]):
    dotted = ".".join(path)
    route = next((_LANDS[k] + dotted[len(k):] for k in sorted(_LANDS, key=len, reverse=True)
                  if dotted == k or dotted.startswith(k + ".")), dotted)
    target = settings
    parts = route.split(".")
    for n, part in enumerate(parts):
        if n and parts[n - 1] == "services":
            target = next(service for service in target if service.id == part)
        else:
            target = getattr(target, _snake(part))
    return target


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_committed_stacks_read_as_written(stack: str, tmp_path: Path) -> None:
    """Every value written in Pulumi.<stack>.yaml is the value the program then uses: a key read
    under another name, or its default taken instead of what the file says, fails here."""
    import yaml

    from tests.infra.test_config_rules import ROOT

    settings = _parse(stack, lambda config: None, tmp_path)
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    checked = 0
    for key, value in config.items():
        if not key.startswith(P) or key[len(P):] in _ELSEWHERE or isinstance(value, dict) and "secure" in value:
            continue
        for path, written in _leaves(value, [key[len(P):]]):
            if ".".join(path) in _ELSEWHERE:
                continue
            landed = _landed(settings, path)
            if isinstance(landed, tuple):
                landed = list(landed)
            if isinstance(written, dict):  # tags: the stack's own tags are added to them
                assert landed.items() >= written.items(), (path, landed)
            else:
                assert landed == written or str(landed) == str(written), f"{'.'.join(path)}: {written!r} read as {landed!r}"
            checked += 1
    assert checked >= 20, checked
