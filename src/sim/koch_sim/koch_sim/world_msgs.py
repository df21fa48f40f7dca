"""The sim's world state as standard messages: objects <-> `visualization_msgs/MarkerArray`.

One CUBE marker per object in `base_link`: `ns` is the object's name, `text` its role (block
or marker), `scale` its full size, `color` its colour, `pose` its pose. That is everything a
renderer needs to rebuild the scene, and RViz draws it as it is.
"""

from __future__ import annotations

from builtin_interfaces.msg import Time
from visualization_msgs.msg import Marker, MarkerArray

from koch_sim.layout import ObjectRole, SceneObject

FRAME = "base_link"


def objects_to_markers(objects: tuple[SceneObject, ...], stamp: Time) -> MarkerArray:
    msg = MarkerArray()
    for index, obj in enumerate(objects):
        m = Marker()
        m.header.frame_id = FRAME
        m.header.stamp = stamp
        m.ns = obj.name
        m.id = index
        m.type = Marker.CUBE
        m.action = Marker.ADD
        m.text = obj.role.value
        m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in obj.position)
        q = m.pose.orientation
        q.w, q.x, q.y, q.z = (float(v) for v in obj.quaternion)
        m.scale.x, m.scale.y, m.scale.z = (2.0 * float(h) for h in obj.half)
        m.color.r, m.color.g, m.color.b, m.color.a = (float(v) for v in obj.rgba)
        msg.markers.append(m)
    return msg


def markers_to_objects(msg: MarkerArray) -> tuple[SceneObject, ...]:
    """The objects of a MarkerArray written by `objects_to_markers` (sizes and colours rounded to float32)."""
    objects = []
    for m in sorted(msg.markers, key=lambda marker: marker.id):
        if m.action != Marker.ADD:
            continue
        role = ObjectRole(m.text) if m.text in ObjectRole._value2member_map_ else ObjectRole.MARKER
        p, q = m.pose.position, m.pose.orientation
        objects.append(SceneObject(
            m.ns, role, (m.scale.x / 2, m.scale.y / 2, m.scale.z / 2), (m.color.r, m.color.g, m.color.b, m.color.a),
            (p.x, p.y, p.z), (q.w, q.x, q.y, q.z)))
    return tuple(objects)
