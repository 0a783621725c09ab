"""The course's own tools, apart from the quantization library: one command, ``linquant``.

    linquant run        # execute the notebooks headless (maintainers: --inplace)
    linquant site       # the offline course site, into _site/
    linquant progress   # who passed which exercise, from participants' executed notebooks
    linquant guide      # regenerate docs/instructors.md's generated sections

``python -m linquant_helpers.course ...`` is the same command. Modules:

* :mod:`~linquant_helpers.course.files`    - where the notebooks are; atomic writes
* :mod:`~linquant_helpers.course.run`      - ``linquant run``
* :mod:`~linquant_helpers.course.site`     - ``linquant site``
* :mod:`~linquant_helpers.course.progress` - ``linquant progress``
* :mod:`~linquant_helpers.course.guide`    - ``linquant guide``
* :mod:`~linquant_helpers.course.cli`      - the command and its subcommands

Every subcommand has ``--help``, exits with status 2 and a one-line message
naming the file or argument on bad input, and writes files atomically.
"""
