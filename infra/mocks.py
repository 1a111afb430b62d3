"""Run the real Pulumi program under mocks and return what it declared.

No Pulumi CLI, no cloud: ``run_stack("dev")`` reads the committed ``Pulumi.dev.yaml``, adds dummy
values for the stack secrets, runs ``infra.program.deploy`` against an in-process mock engine and
returns every registered resource with its inputs as plain Python values, plus the stack exports.

Used by the infra tests, the policy-pack tests and ``make render``. Each call runs in a fresh
``contextvars.Context``, so the Pulumi runtime state (settings, config, root stack) of one run
never leaks into the next.

Secret values are kept readable (tests must see them) but every input or output that was a secret
is listed in ``Captured.secret_inputs`` / ``StackRun.secret_outputs``.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from google.protobuf import json_format

from infra.mocks_stacks import MOCK_ORGANIZATION, committed_stack_outputs, referenced_stack
from infra.mocks_wire import without_resource_refs

from infra.mock_cloud import ACCOUNT_ID, deploy_session_arn, kubeconfig as _kubeconfig, session_context

ROOT = Path(__file__).resolve().parent.parent

# Dummy values for the secrets the README tells operators to set. The database password only
# matters for stacks with a SQL source; the API keys are optional (generated when unset).
DUMMY_SECRETS = {
    "data-mesh:databasePassword": "mock-database-password",
    "data-mesh:customerFeaturesApiKey": "mock-features-api-key",
    "data-mesh:customerScoringApiKey": "mock-scoring-api-key",
}
# Secrets each committed stack needs for `pulumi up`; tests may pass more or fewer.
REQUIRED_SECRETS = {"dev": (), "prod": ("data-mesh:databasePassword",)}

_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


class Unknown:
    """Stands for a value that is only known after `pulumi up` (seen with ``preview=True``)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


@dataclass(frozen=True)
class ResourceRef:
    """A resource passed as an input (for example a Cluster handed to a ManagedNodeGroup)."""

    urn: str

    @property
    def type(self) -> str:
        return self.urn.split("::")[2].split("$")[-1]

    @property
    def name(self) -> str:
        return self.urn.split("::")[3]


@dataclass(frozen=True)
class Captured:
    """One registered resource: its type token, logical name, URN, parent and resolved inputs."""

    type: str
    name: str
    urn: str
    parent: str | None
    provider: str | None
    custom: bool
    inputs: dict[str, Any]
    secret_inputs: frozenset[str]  # top-level input keys whose value is (or contains) a secret
    dependencies: tuple[str, ...] = ()
    protect: bool = False  # the `protect` resource option: `pulumi destroy` and replacements refuse it

    def get(self, path: str, default: Any = None) -> Any:
        """Dotted lookup into the inputs: ``res.get("metadata.name")``."""
        value: Any = self.inputs
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return default
        return value


@dataclass(frozen=True)
class Invocation:
    """One provider function call (invoke) the program made, and whether the mocks knew it."""

    token: str
    args: dict[str, Any]
    answered: bool


@dataclass
class StackRun:
    """Everything one mocked run of the program declared."""

    stack: str
    config: dict[str, str]
    resources: list[Captured]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    invocations: list[Invocation] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[Captured]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Captured:
        """The single resource of a type (and logical name, when given); fails loudly otherwise."""
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            names = sorted(r.name for r in self.of_type(type_token))
            raise LookupError(f"expected one {type_token} named {name!r}, found {len(found)}; have {names}")
        return found[0]

    def by_urn(self, urn: str) -> Captured:
        return next(r for r in self.resources if r.urn == urn)

    def children(self, parent: Captured) -> list[Captured]:
        return [r for r in self.resources if r.parent == parent.urn]

    @property
    def unanswered(self) -> list[Invocation]:
        return [i for i in self.invocations if not i.answered]


def _plain(value: Any, secret_found: list[bool]) -> Any:
    """Protobuf-JSON value -> plain Python: unwrap secrets (noting them), refs, unknowns, ints."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            secret_found.append(True)
            return _plain(value.get("value"), secret_found)
        if sig == _RESOURCE_SIG:
            return ResourceRef(value["urn"])
        if sig is not None:
            return value  # assets and archives stay as their wire form
        return {k: _plain(v, secret_found) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, secret_found) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == _UNKNOWN:
        return UNKNOWN
    return value


def _plain_inputs(struct: Any) -> tuple[dict[str, Any], frozenset[str]]:
    wire = json_format.MessageToDict(struct) if struct is not None else {}
    inputs: dict[str, Any] = {}
    secrets: set[str] = set()
    for key, value in wire.items():
        found: list[bool] = []
        inputs[key] = _plain(value, found)
        if found:
            secrets.add(key)
    return inputs, frozenset(secrets)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ProgramMocks:
    """Explicit mocks: canned outputs per resource type and answers to the invokes the program makes."""

    def __init__(self, region: str, caller_arn: str,
                 stack_outputs: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.region = region
        self.caller_arn = caller_arn
        self.invocations: list[Invocation] = []
        # Outputs of the stacks a StackReference may name, by fully qualified name.
        self.stack_outputs = dict(stack_outputs or {})

    # Resource outputs that are computed by the cloud and that the program reads.
    def canned(self, typ: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        region, account = self.region, ACCOUNT_ID
        physical = inputs.get("name") or name
        arn_base = f"arn:aws:{{service}}:{region}:{account}"
        if typ == "aws:ecr/repository:Repository":
            return {"repositoryUrl": f"{account}.dkr.ecr.{region}.amazonaws.com/{physical}",
                    "arn": arn_base.format(service="ecr") + f":repository/{physical}",
                    "registryId": account}
        if typ == "docker:index/image:Image":
            image = str(inputs.get("imageName", name))
            repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
            return {"repoDigest": f"{repository}@sha256:{_digest(image)}", "baseImageName": image,
                    "imageId": f"sha256:{_digest('id' + image)}"}
        if typ == "pulumi:pulumi:StackReference":
            return {"outputs": self.stack_outputs.get(str(inputs.get("name")), {}), "secretOutputNames": []}
        if typ == "command:local:Command":
            # A successful promotion copy prints the digest it copied (infra/promotion.py).
            return {"stdout": (inputs.get("environment") or {}).get("DIGEST", "")}
        if typ == "eks:index:Cluster":
            cluster_name = str(inputs.get("name") or name)
            kubeconfig = _kubeconfig(cluster_name, region)
            issuer = f"oidc.eks.{region}.amazonaws.com/id/{_digest(cluster_name)[:32].upper()}"
            return {"kubeconfig": kubeconfig, "kubeconfigJson": json.dumps(kubeconfig),
                    "oidcIssuer": issuer, "oidcProviderUrl": issuer,
                    "oidcProviderArn": f"arn:aws:iam::{account}:oidc-provider/{issuer}",
                    "clusterSecurityGroupId": f"sg-{_digest(cluster_name + 'c')[:17]}",
                    "nodeSecurityGroupId": f"sg-{_digest(cluster_name + 'n')[:17]}"}
        if typ == "aws:kms/key:Key":
            return {"arn": arn_base.format(service="kms") + f":key/{name}-id", "keyId": f"{name}-id"}
        if typ in ("aws:iam/role:Role", "aws:iam/policy:Policy"):
            kind = "role" if typ.endswith("Role") else "policy"
            return {"arn": f"arn:aws:iam::{account}:{kind}/{physical}", "name": physical}
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            return {"arn": arn_base.format(service="logs") + f":log-group:{physical}"}
        if typ == "aws:ec2/launchTemplate:LaunchTemplate":
            return {"latestVersion": 1, "arn": arn_base.format(service="ec2") + f":launch-template/{name}-id"}
        if typ == "aws:sqs/queue:Queue":
            return {"arn": arn_base.format(service="sqs") + f":{physical}",
                    "url": f"https://sqs.{region}.amazonaws.com/{account}/{physical}"}
        if typ == "aws:ec2/eip:Eip":
            return {"publicIp": "198.51.100.10", "allocationId": f"eipalloc-{name}"}
        if typ.startswith("random:index/"):
            return {"result": f"mock-{_digest(name)[:32]}"}
        if typ.startswith("kubernetes:"):
            metadata = dict(inputs.get("metadata") or {})
            metadata.setdefault("name", name)
            return {"metadata": metadata}
        return {}

    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", {**args.inputs, **self.canned(args.typ, args.name, args.inputs)}

    def call(self, args: Any) -> dict[str, Any]:
        token, region, account = args.token, self.region, ACCOUNT_ID
        answers: dict[str, Callable[[], dict[str, Any]]] = {
            "aws:index/getAvailabilityZones:getAvailabilityZones": lambda: {
                "names": [f"{region}{z}" for z in "abcdef"],
                "zoneIds": [f"euw1-az{i}" for i in range(1, 7)], "id": region, "groupNames": [region]},
            "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda: {
                "authorizationToken": "QVdTOm1vY2stZWNyLXBhc3N3b3Jk", "userName": "AWS",
                "password": "mock-ecr-password", "expiresAt": "2030-01-01T00:00:00Z",
                "proxyEndpoint": f"https://{account}.dkr.ecr.{region}.amazonaws.com", "id": region},
            "aws:index/getCallerIdentity:getCallerIdentity": lambda: {
                "accountId": account, "arn": self.caller_arn, "userId": "AROAMOCK:pulumi-up", "id": account},
            "aws:iam/getSessionContext:getSessionContext": lambda: session_context(str(args.args["arn"])),
            "aws:index/getRegion:getRegion": lambda: {"name": region, "region": region, "id": region,
                                                      "description": region},
            "aws:index/getPartition:getPartition": lambda: {"partition": "aws", "dnsSuffix": "amazonaws.com",
                                                            "id": "aws"},
        }
        answer = answers.get(token)
        self.invocations.append(Invocation(token, dict(args.args), answer is not None))
        return answer() if answer else {}


class _RecordingMonitor:
    """Wraps the SDK's MockMonitor to record each registration's parent, provider and dependencies."""

    def __init__(self, mocks: ProgramMocks) -> None:
        from pulumi.runtime.mocks import MockMonitor

        class Monitor(MockMonitor):
            def RegisterResource(inner, request):  # noqa: N802 - gRPC method name
                response = MockMonitor.RegisterResource(inner, without_resource_refs(request))
                if request.type != "pulumi:pulumi:Stack":
                    self._record(request, response.urn)
                return response

            def ReadResource(inner, request):  # noqa: N802
                response = MockMonitor.ReadResource(inner, request)
                self._record(request, response.urn, custom=True)
                return response

        self.monitor = Monitor(mocks)
        self.captured: list[Captured] = []
        self._lock = threading.Lock()

    def _record(self, request: Any, urn: str, custom: bool | None = None) -> None:
        inputs, secrets = _plain_inputs(getattr(request, "object", None) or getattr(request, "properties", None))
        entry = Captured(
            type=request.type, name=request.name, urn=urn, parent=request.parent or None,
            provider=request.provider or None,
            custom=bool(request.custom) if custom is None else custom,
            inputs=inputs, secret_inputs=secrets,
            dependencies=tuple(getattr(request, "dependencies", ()) or ()),
            protect=bool(getattr(request, "protect", False)),
        )
        with self._lock:
            self.captured.append(entry)


def stack_config(stack: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The committed stack file's config as Pulumi would hand it over (strings, objects as JSON)."""
    from infra.config import stack_file_config

    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file Pulumi.{stack}.yaml next to Pulumi.yaml")
    config = stack_file_config(path)
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def run_program(
    stack: str,
    config: Mapping[str, str],
    secret_keys: frozenset[str] | set[str] = frozenset(),
    program: Callable[[], None] | None = None,
    preview: bool = False,
    caller_arn: str | None = None,
    stack_outputs: Mapping[str, dict[str, Any]] | None = None,
) -> StackRun:
    """Run ``program`` (default: ``deploy(settings_from_pulumi())``) under mocks with exactly this config.

    ``caller_arn`` is who ``get_caller_identity`` says runs the program (default: the stack's deploy role).
    ``stack_outputs`` answers StackReferences: fully qualified stack name -> that stack's outputs.
    """
    context = contextvars.Context()  # empty: fresh Pulumi settings, config and root stack
    return context.run(_run, stack, dict(config), frozenset(secret_keys), program, preview,
                       caller_arn or deploy_session_arn(stack), dict(stack_outputs or {}))


def run_stack(
    stack: str,
    overrides: Mapping[str, str | None] | None = None,
    secrets: Mapping[str, str] | None = None,
    preview: bool = False,
    caller_arn: str | None = None,
    stack_outputs: Mapping[str, dict[str, Any]] | None = None,
) -> StackRun:
    """Run the program for a committed stack file under mocks.

    ``overrides`` replace (or, with ``None``, remove) config keys, values as Pulumi passes them
    (objects as JSON strings). ``secrets`` are set as secret config; by default the dummy values of
    the secrets the stack needs (``REQUIRED_SECRETS``) are set. Raises ``ConfigError`` when the
    settings are invalid, exactly as ``pulumi preview`` would fail. A promoting stack's
    StackReference answers, unless ``stack_outputs`` says otherwise, with the outputs of the
    referenced committed stack's own mocked run: prod deploys what dev's program produced.
    """
    config = stack_config(stack, overrides)
    source = referenced_stack(config)
    if stack_outputs is None and source and "/" not in source and (ROOT / f"Pulumi.{source}.yaml").exists():
        from infra.config import PROJECT

        stack_outputs = {f"{MOCK_ORGANIZATION}/{PROJECT}/{source}": committed_stack_outputs(source)}
    if secrets is None:
        secrets = {key: DUMMY_SECRETS[key] for key in REQUIRED_SECRETS.get(stack, ())}
    config.update(secrets)
    return run_program(stack, config, frozenset(secrets), preview=preview, caller_arn=caller_arn,
                       stack_outputs=stack_outputs)


def _run(stack: str, config: dict[str, str], secret_keys: frozenset[str],
         program: Callable[[], None] | None, preview: bool, caller_arn: str,
         stack_outputs: dict[str, dict[str, Any]] | None = None) -> StackRun:
    import pulumi
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from infra.config import PROJECT

    # A fresh loop per run: an earlier asyncio.run() in the same process leaves none (or a closed one).
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = ProgramMocks(region=config.get("aws:region", "eu-west-1"), caller_arn=caller_arn,
                         stack_outputs=stack_outputs)
    recorder = _RecordingMonitor(mocks)
    runtime_config.set_all_config(dict(config), sorted(secret_keys))
    runtime_settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=recorder.monitor,
                             organization=MOCK_ORGANIZATION)
    root = runtime_settings.get_root_resource()

    if program is None:
        from infra.config import settings_from_pulumi
        from infra.program import deploy

        def program() -> None:
            deploy(settings_from_pulumi())

    resolved: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def body() -> None:
        program()
        for key, value in dict(root.outputs).items():  # type: ignore[union-attr]
            output = pulumi.Output.from_input(value)
            resolved[key] = await output.future(with_unknowns=True)
            if await output.is_secret():
                secret_outputs.add(key)

    _sync_await(run_pulumi_func(body))
    outputs = {key: _unknowns(value) for key, value in resolved.items()}
    return StackRun(stack=stack, config=config, resources=list(recorder.captured), outputs=outputs,
                    secret_outputs=frozenset(secret_outputs), invocations=list(mocks.invocations))


def _unknowns(value: Any) -> Any:
    from pulumi.output import Unknown as SdkUnknown

    if isinstance(value, SdkUnknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _unknowns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknowns(v) for v in value]
    return value
