"""Typed, frozen stack settings: what ``infra/config.py`` produces and components consume."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.settings_platform import ConnectivitySettings, KarpenterSettings


class Secret:
    """A secret config value; never shown by repr or str, so it cannot leak into a log."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(******)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """VPC address range, how many availability zones, and NAT layout."""

    cidr: str
    availability_zones: int
    nat_gateways: str  # "single" or "per-az"


@dataclass(frozen=True, kw_only=True)
class NodeGroupSettings:
    """The managed node group: instance types and sizes."""

    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    disk_size_gb: int
    capacity_type: str


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """The EKS control plane and its access."""

    kubernetes_version: str
    admin_role_arns: tuple[str, ...]
    public_endpoint_cidrs: tuple[str, ...]  # empty: private endpoint only
    node_group: NodeGroupSettings
    # Admitted on tcp/443 to the cluster security group (the private endpoint): CIDRs and security groups.
    api_private_cidrs: tuple[str, ...] = ()
    api_security_group_ids: tuple[str, ...] = ()
    log_retention_days: int = 90  # the control-plane log group /aws/eks/<cluster>/cluster


@dataclass(frozen=True, kw_only=True)
class RegistrySettings:
    """ECR repositories: tag mutability, deletion, lifecycle."""

    immutable_tags: bool
    force_delete: bool
    keep_images: int


@dataclass(frozen=True, kw_only=True)
class ExposureSettings:
    """How clients reach the services: NodePort (VPC only), LoadBalancer or Ingress."""

    type: str
    client_cidrs: tuple[str, ...]
    internal: bool
    ingress_class: str
    host: str | None


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The SQL store a service reads from; the password is a stack secret."""

    host: str
    port: int
    name: str
    user: str
    ssl_mode: str
    cidr: str
    password: Secret
    ca_bundle: str | None = None  # PEM the server certificate is verified against (verify-ca, verify-full)

    def url_without_password(self) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.name}?sslmode={self.ssl_mode}"


@dataclass(frozen=True, kw_only=True)
class ResourceSettings:
    """Container requests and limits (Kubernetes quantities)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True, kw_only=True)
class AutoscalingSettings:
    """HorizontalPodAutoscaler bounds and CPU target."""

    min_replicas: int
    max_replicas: int
    cpu_utilization: int


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """One service of the mesh as deployed in this stack."""

    id: str
    version: str
    replicas: int
    port: int
    resources: ResourceSettings
    autoscaling: AutoscalingSettings | None
    source: str  # "bundled" or "sql"
    sql_mode: str  # "cached" or "live", when source is sql
    refresh_seconds: int
    enrichment: str | None  # scoring only: "bundled" or "remote"
    api_key: Secret | None  # None: generated per stack
    runtime_env: tuple[tuple[str, str], ...] = ()  # more ConfigMap entries (APINODE_DISPATCH)

    @property
    def highly_available(self) -> bool:
        return self.replicas > 1


@dataclass(frozen=True, kw_only=True)
class Consumer:
    """A workload of another team allowed to call customer-features, by its mesh identity."""

    namespace: str
    service_account: str

    @property
    def principal(self) -> str:
        """The SPIFFE identity ztunnel proves with mTLS (trust domain cluster.local)."""
        return f"cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True, kw_only=True)
class MeshSettings:
    """The Istio ambient mesh around the services: who besides customer-scoring calls customer-features."""

    consumers: tuple[Consumer, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """Where a stack's images come from: built here from a digest-pinned base, or promoted from a stack."""

    base_image: str | None  # building stacks: <image>:<tag>@sha256:<digest>
    promote_from: str | None  # promoting stacks: the stack whose imageRefs output this one deploys
    pinned_refs: dict[str, str] = field(default_factory=dict, hash=False)  # service id -> ref, wins

    @property
    def builds(self) -> bool:
        return self.promote_from is None


@dataclass(frozen=True, kw_only=True)
class GovernanceSettings:
    """Model dispatch per prediction endpoint, and which monitoring add-ons the stack declares."""

    model_dispatch: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict, hash=False)
    prometheus_operator: bool = False
    cloudwatch_observability: bool = False


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    """Everything one stack (environment) declares."""

    project: str
    stack: str
    region: str
    tags: dict[str, str] = field(hash=False)
    network: NetworkSettings
    cluster: ClusterSettings
    registry: RegistrySettings
    namespace: str
    exposure: ExposureSettings
    database: DatabaseSettings | None
    services: tuple[ServiceSettings, ...]
    source_repository: str | None = None  # the images' org.opencontainers.image.source label
    protect: bool = False  # cluster, KMS key and ECR repositories refuse deletion
    mesh: MeshSettings = field(default_factory=MeshSettings)
    karpenter: KarpenterSettings | None = None  # None: the managed node group only
    connectivity: ConnectivitySettings = ConnectivitySettings()
    images: ImageSettings = field(default_factory=lambda: ImageSettings(base_image=None, promote_from=None))
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)

    @property
    def name(self) -> str:
        """Cloud-side name prefix: project and stack."""
        return f"{self.project}-{self.stack}"

    def service(self, service_id: str) -> ServiceSettings:
        return next(s for s in self.services if s.id == service_id)
