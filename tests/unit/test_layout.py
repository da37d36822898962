"""The distribution's top level, as users and its documentation know it."""

from tests.conftest import REPO_ROOT

TOP_LEVEL = [
    "Pulumi.yaml",
    "__main__.py",
    "stacks",
    "charts",
    "overlays",
    "policies",
    "tests",
    "README.md",
    "mlplatform",
]


def test_top_level_layout():
    missing = [name for name in TOP_LEVEL if not (REPO_ROOT / name).exists()]
    assert missing == []
    assert sorted(p.name for p in (REPO_ROOT / "stacks").glob("Pulumi.*.yaml")) == [
        "Pulumi.cloud.yaml",
        "Pulumi.lab.yaml",
        "Pulumi.openshift.yaml",
    ]


def test_pulumi_project_reads_stacks_from_the_stacks_folder():
    import yaml

    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "mlplatform"
    assert project["runtime"]["name"] == "python"
    assert project["stackConfigDir"] == "stacks"
