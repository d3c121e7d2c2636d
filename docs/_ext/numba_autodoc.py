"""Document Numba dispatchers (``@njit`` and ``@cuda.jit`` functions) as functions.

autodoc takes a dispatcher for data, since it is an object and not a Python function; this
documenter gives it the signature and the docstring of the Python function it compiles.
"""

from __future__ import annotations

import inspect

from sphinx.ext.autodoc import FunctionDocumenter


def _py_func(obj):
    return getattr(obj, "py_func", None)


class DispatcherDocumenter(FunctionDocumenter):
    objtype = "function"
    priority = FunctionDocumenter.priority + 10

    @classmethod
    def can_document_member(cls, member, membername, isattr, parent) -> bool:
        return callable(member) and inspect.isfunction(_py_func(member))

    def format_args(self, **kwargs) -> str:
        py = _py_func(self.object)
        if py is None:
            return super().format_args(**kwargs)
        return str(inspect.signature(py)).replace("\\", "\\\\")

    def get_doc(self):
        py = _py_func(self.object)
        if py is not None and py.__doc__:
            return [self.prepare_docstring(py.__doc__)]
        return super().get_doc()

    def prepare_docstring(self, doc):
        from sphinx.util.docstrings import prepare_docstring

        return prepare_docstring(doc, self.directive.state.document.settings.tab_width)


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    # in place of autodoc's function documenter, under the same directive (autofunction)
    app.registry.add_documenter("function", DispatcherDocumenter)
    return {"parallel_read_safe": True}
