"""Model families: DLRM registered as `dlrm`, dispatch of archs / spaces / models, plugins, bad input."""

from __future__ import annotations

import textwrap
import uuid

import pytest
import torch
from click.testing import CliRunner

from dnas_hw import family
from dnas_hw.app.cli import main
from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import DLRM, build_model as build_dlrm
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.errors import UserError
from dnas_hw.family import FamilyError, arch_from_dict, family_of, get_family, load_arch, register_family
from dnas_hw.space import SpaceError, get_space


def test_dlrm_is_the_default_family(tiny_arch):
    dlrm = get_family("dlrm")
    assert dlrm.arch_type is Arch and dlrm.space_type is SearchSpace
    assert {"dlrm-tiny", "dlrm-kaggle"} <= set(dlrm.spaces)
    assert family_of(tiny_arch) is dlrm and family_of(get_space("dlrm-tiny")) is dlrm
    # An arch JSON without a "family" key is a DLRM arch: every existing file stays valid.
    assert "family" not in tiny_arch.to_dict()
    assert arch_from_dict(tiny_arch.to_dict()) == tiny_arch


def test_build_model_dispatches_to_the_family_builder(tiny_arch):
    model = family.build_model(tiny_arch, seed=3)
    assert isinstance(model, DLRM) and family_of(model).name == "dlrm"
    reference = build_dlrm(tiny_arch, seed=3).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_space_toml_family_key_defaults_to_dlrm(tmp_path):
    body = "bottom_widths = [8]\nbottom_layers = 1\ntop_widths = [8]\ntop_layers = 1\nemb_dims = [2]\n"
    plain, named = tmp_path / "plain.toml", tmp_path / "named.toml"
    plain.write_text(body)
    named.write_text('family = "dlrm"\n' + body)
    a, b = get_space(str(plain)), get_space(str(named))
    assert isinstance(a, SearchSpace) and a.op_calls() == b.op_calls()


def test_unknown_family_in_a_space_file_names_file_and_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv(family.PLUGINS_ENV, raising=False)
    path = tmp_path / "s.toml"
    path.write_text('family = "nope"\n')
    with pytest.raises(SpaceError, match=r"s\.toml: unknown model family 'nope'.*DNAS_HW_PLUGINS"):
        get_space(str(path))
    path.write_text("family = 3\n")
    with pytest.raises(SpaceError, match="must name a model family"):
        get_space(str(path))
    with pytest.raises(SpaceError, match="dlrm-tiny"):  # the message lists the names there are
        get_space("no-such-space")


def test_unknown_family_in_an_arch_file_is_one_line_exit_2(tmp_path, synth_dir, monkeypatch):
    monkeypatch.delenv(family.PLUGINS_ENV, raising=False)
    arch = tmp_path / "arch.json"
    arch.write_text('{"family": "nope", "num_dense": 13}')
    with pytest.raises(FamilyError, match="unknown model family 'nope'"):
        load_arch(arch)
    result = CliRunner().invoke(main, ["train", "--data", str(synth_dir), "--arch", str(arch), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "unknown model family" in result.stderr
    assert not (tmp_path / "run").exists()


def test_registering_a_taken_name_raises():
    dlrm = get_family("dlrm")
    kwargs = dict(arch_type=Arch, build_model=build_dlrm, space_type=SearchSpace, space_from_dict=dlrm.space_from_dict)
    with pytest.raises(ValueError, match="already registered"):
        register_family("dlrm", **kwargs)
    with pytest.raises(ValueError, match="dlrm-tiny"):
        register_family("clash", spaces={"dlrm-tiny": dlrm.spaces["dlrm-tiny"]}, **kwargs)
    assert "clash" not in family.registered_families()


PLUGIN = '''
from dataclasses import dataclass
from dnas_hw.family import ArchMethods, register_family

@dataclass(frozen=True)
class ToyArch(ArchMethods):
    num_dense: int
    num_sparse: int

    @classmethod
    def from_dict(cls, d):
        return cls(d["num_dense"], d["num_sparse"])

@dataclass(frozen=True)
class ToySpace:
    name: str
    width: int

register_family(
    "{name}", arch_type=ToyArch, build_model=lambda arch, seed=None: None, space_type=ToySpace,
    space_from_dict=lambda d, name: ToySpace(name, **d), spaces={{"{name}-builtin": ToySpace("{name}-builtin", 1)}},
)
'''


def test_plugins_named_in_the_environment_are_imported_on_first_miss(tmp_path, monkeypatch):
    # The toy family lives only for this test: later tests walk every registered family's spaces.
    monkeypatch.setattr(family, "_FAMILIES", dict(family._FAMILIES))
    name = f"toy{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}_plugin.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(family.PLUGINS_ENV, f" {name}_plugin , ")
    space_file = tmp_path / "toy.toml"
    space_file.write_text(f'family = "{name}"\nwidth = 7\n')
    space = get_space(str(space_file))  # imports the plugin, which registers the family
    assert type(space).__name__ == "ToySpace" and space.width == 7 and family_of(space).name == name
    assert get_space(f"{name}-builtin").width == 1
    arch = arch_from_dict({"family": name, "num_dense": 2, "num_sparse": 3})
    assert family_of(arch).name == name
    with pytest.raises(UserError, match="num_dense = 2 and 3 embedding tables.*13 dense and 26 categorical"):
        arch.check_data(13, 26)


def test_a_plugin_that_cannot_be_imported_is_a_user_error(monkeypatch):
    monkeypatch.setenv(family.PLUGINS_ENV, "no_such_module_for_dnas_hw")
    with pytest.raises(FamilyError, match="cannot import 'no_such_module_for_dnas_hw'"):
        get_family("still-unknown")


# The names a family's arch or space may define although `ArchMethods` / `SpaceMethods` define them too.
PROTOCOL_SETTINGS = {"family", "error", "sequence_fields", "retired_keys", "_validate"}


def test_both_families_use_the_one_arch_and_space_protocol(dcn):
    """No family re-implements a member of the protocol (`dnas_hw.arch`, `dnas_hw.space`): written once."""
    from dnas_hw.arch import ArchMethods
    from dnas_hw.space import SpaceMethods

    for cls, protocol in ((Arch, ArchMethods), (dcn.DCNArch, ArchMethods),
                          (SearchSpace, SpaceMethods), (dcn.DCNSpace, SpaceMethods)):
        assert issubclass(cls, protocol)
        again = {n for n in set(vars(cls)) & set(vars(protocol)) if not n.startswith("__")} - PROTOCOL_SETTINGS
        assert not again, f"{cls.__name__} re-implements {sorted(again)}"
