"""The README's "Using it from Python" transcript, run as a doctest in a
fresh interpreter, as a user would type it: the public API it shows must
keep working as shown."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

RUN = """
import doctest, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
(block,) = re.findall(r"```pycon\\n(.*?)```", text, re.S)
test = doctest.DocTestParser().get_doctest(block, {}, "README", sys.argv[1], 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
runner.run(test)
result = runner.summarize(verbose=False)
print("attempted", result.attempted, "failed", result.failed)
"""


def test_readme_has_one_transcript():
  with open(README, encoding="utf-8") as f:
    blocks = re.findall(r"```pycon\n(.*?)```", f.read(), re.S)
  assert len(blocks) == 1
  assert "registry.get(" in blocks[0] and "sampled_layer" in blocks[0]


def test_readme_transcript_runs():
  env = dict(os.environ)
  env.pop("SAMPLING_MLP_METHODS", None)
  proc = subprocess.run([sys.executable, "-c", RUN, README], cwd=ROOT,
                        env=env, text=True, capture_output=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  attempted, failed = map(int, re.search(r"attempted (\d+) failed (\d+)",
                                         out).groups())
  assert attempted > 10
  assert failed == 0, out[-5000:]
