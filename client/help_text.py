"""Help texts of the command line: docstrings reflowed so that the terminal wraps them.

typer's rich help keeps a docstring's single line breaks (in a command's ``--help`` and in
the command list), so a paragraph hard-wrapped at the source's 100 columns broke
mid-sentence in any other terminal width ("computed\\n once"). Each paragraph (the text
between blank lines) becomes one line here, and rich wraps it to the terminal.
"""

from __future__ import annotations

import inspect

import typer


def reflow(text: str) -> str:
    """``text`` (a docstring) with each paragraph's lines joined by single spaces; blank
    lines between paragraphs are kept, so paragraphs stay apart."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines())
                       for paragraph in paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Set the help of every command registered on ``app`` and its sub-apps (``tritonlens
    export ...``) to its help text or docstring, reflowed. Call once every command is
    registered, before the app runs."""
    for info in app.registered_commands:
        text = info.help or inspect.getdoc(info.callback)
        if text:
            info.help = reflow(text)
    for group in app.registered_groups:
        reflow_help(group.typer_instance)
