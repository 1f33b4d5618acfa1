"""The README's "Using it from Python" transcript, run as a doctest: the
public API it shows must keep working as shown."""

import doctest
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def _transcripts():
  with open(README, encoding="utf-8") as f:
    text = f.read()
  return re.findall(r"```pycon\n(.*?)```", text, re.S)


def test_readme_has_a_transcript():
  (block,) = _transcripts()
  assert "registry.get(" in block and "sampled_layer" in block


def test_readme_transcript_runs():
  (block,) = _transcripts()
  test = doctest.DocTestParser().get_doctest(block, {}, "README", README, 0)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.attempted > 10
  assert result.failed == 0, "the README transcript failed (output above)"
