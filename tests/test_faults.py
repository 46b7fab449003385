"""benchmarks/faults.py: SIGKILL at random moments, rerun, bitwise equal to the uninterrupted run."""

import json

import pytest
import scripts


def _faults():
  return scripts.load('faults')


def _check(trials, steps, tmp_path, capsys):
  assert _faults().main(['--trials', str(trials), '--steps', str(steps), '--out',
                         str(tmp_path)]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report['trials'] == report['equal'] == trials, report
  return report


def test_two_kills_resume_to_the_uninterrupted_run(tmp_path, capsys):
  _check(2, 6, tmp_path, capsys)


@pytest.mark.slow
def test_twenty_kills_resume_to_the_uninterrupted_run(tmp_path, capsys):
  report = _check(20, 12, tmp_path, capsys)
  assert any(r['killed'] and r['resumed_from'] > 0 for r in report['results'])
