"""``lm_eval`` from a site folder installed with ``--target``: the folder is added as a site directory so
its ``.pth`` files run (tandem_lm_eval.pth registers ``--model tandem``), then lm-eval's own CLI.

    python3 launch_lm_eval.py SITE --model tandem --tasks ...
"""

import runpy
import site
import sys

sys.path.pop(0)  # this script's folder (the bundle): only the site folder provides packages
site.addsitedir(sys.argv[1])
sys.argv = ["lm_eval", *sys.argv[2:]]
runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)
