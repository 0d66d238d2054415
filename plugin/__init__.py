"""QGIS entry point of the MTL Explain plugin: ``classFactory`` only, importing the plugin class lazily."""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """Return the plugin instance QGIS asks for.

    Args:
        iface: the running QGIS interface (``QgisInterface``).

    Returns:
        The :class:`~.mtl_explain_plugin.MtlExplainPlugin` bound to ``iface``.
    """
    from .mtl_explain_plugin import MtlExplainPlugin

    return MtlExplainPlugin(iface)
