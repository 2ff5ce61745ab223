"""Hatch build hook: put the start-up hook file (tandem_lm_eval.pth) into editable installs too.

Regular wheels get it from ``force-include``; hatchling applies that table only to regular wheels, and
reads the editable equivalent from build data.
"""

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            pth = Path(self.root) / "tandem_lm_eval.pth"
            build_data.setdefault("force_include_editable", {})[str(pth)] = "tandem_lm_eval.pth"
