"""mtl3d_perception: 3D-aware multi-task dense perception (CvM-MTL) for ROS 2 robots.

Data flows one way: sensor -> frames -> pipeline -> products -> messages (see DESIGN.md).
"""

__version__ = "0.1.0"
