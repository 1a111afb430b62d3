"""What is inside each built service image: size, own service folder only, labels, user, entrypoint."""

from __future__ import annotations

import json
import os

import pytest
from image_harness import (
    IMAGE_APP_DIR,
    IMAGE_SERVICE_DIR,
    MIB,
    NON_ROOT,
    REPO,
    SERVICES,
    CommandFailed,
    build_image,
)

pytestmark = pytest.mark.docker

LAYER_BUDGET_MIB = 180

# Lists every regular file in the image, run with the image's own Python.
LIST_FILES = (
    "import json, os, sys\n"
    "out = []\n"
    "for top, dirs, files in os.walk('/'):\n"
    "    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev')]\n"
    "    out += [os.path.join(top, f) for f in files]\n"
    "json.dump(out, sys.stdout)\n"
)


def image_files(docker, ref: str) -> list[str]:
    listing = docker(
        "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python3", ref, "-c", LIST_FILES
    )
    return json.loads(listing)


def source_files(service: str) -> set[str]:
    """The service folder as the build context sends it (.dockerignore drops bytecode)."""
    root = REPO / "services" / service
    found = set()
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found |= {os.path.relpath(os.path.join(top, f), root) for f in files if not f.endswith(".pyc")}
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_own_layers_fit_the_budget(images, service):
    image = images[service]
    assert image.own_layers_bytes <= LAYER_BUDGET_MIB * MIB, (
        f"{service}: {image.own_layers_bytes / MIB:.1f} MiB above the base, budget {LAYER_BUDGET_MIB} MiB"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_only_its_own_service_folder(docker, images, service):
    files = image_files(docker, images[service].ref)
    in_service = {
        os.path.relpath(f, IMAGE_SERVICE_DIR) for f in files if f.startswith(IMAGE_SERVICE_DIR + "/")
    }
    assert in_service == source_files(service)
    assert "service.yaml" in in_service
    # Nothing of the other service anywhere: its definition, its data, its model.
    app_entries = {f.split("/")[3] for f in files if f.startswith(IMAGE_APP_DIR + "/")}
    assert app_entries == {"site", "service"}
    models = [f for f in files if f.endswith(".onnx")]
    if service == "customer-scoring":
        assert models and all(m.startswith(IMAGE_SERVICE_DIR + "/model/") for m in models)
    else:
        assert models == [], f"{service} carries a model it does not serve: {models}"


@pytest.mark.parametrize("service", SERVICES)
def test_oci_labels_name_the_build(docker, images, service):
    image = images[service]
    labels = docker.inspect(image.ref)["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == service
    assert labels["org.opencontainers.image.version"] == image.build_args["VERSION"]
    assert labels["org.opencontainers.image.revision"] == image.build_args["REVISION"]
    assert labels["org.opencontainers.image.source"] == image.build_args["SOURCE"]


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_numeric_non_root_user_with_exec_form_entrypoint(docker, images, service):
    config = docker.inspect(images[service].ref)["Config"]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert config["User"] == NON_ROOT
    # Exec form: no shell between the container runtime and the server, so SIGTERM reaches it.
    assert config["Entrypoint"][:3] == ["python3", "-m", "apinode"]


def test_build_without_service_fails_with_a_clear_message(docker, images):
    base_ref = images[SERVICES[0]].base_ref
    with pytest.raises(CommandFailed) as failed:
        build_image(docker, None, base_ref, {})
    assert "build with --build-arg SERVICE=<service id>" in str(failed.value)


def test_services_share_every_layer_but_their_own_folder(docker, images):
    # A node running both services pulls and stores the runtime and its dependencies once.
    features, scoring = (docker.inspect(images[s].ref)["RootFS"]["Layers"] for s in SERVICES)
    assert features[:-1] == scoring[:-1]
    assert features[-1] != scoring[-1]
