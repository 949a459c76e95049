"""Declared tables of the stages whose dispatch is still inline in their own code.

Each module here says, honestly, which kinds its stage handles today, so that
``snncompile.ir.kinds.support_matrix()`` is complete. When that stage's code is converted
to dispatch by table, its table moves into the stage's module (and out of here).
"""
