"""Thai and English labels of the console: Thai first by default (control-room staff read Thai first)."""

from __future__ import annotations

from markupsafe import Markup, escape

LABELS: dict[str, tuple[str, str]] = {
    "title": ("ศูนย์ควบคุมเมือง", "City control room"),
    "login": ("เข้าสู่ระบบ", "Log in"),
    "logout": ("ออกจากระบบ", "Log out"),
    "username": ("ชื่อผู้ใช้", "User name"),
    "password": ("รหัสผ่าน", "Password"),
    "bad_login": ("ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง", "Wrong user name or password"),
    "too_many": ("ลองผิดหลายครั้งเกินไป โปรดรอ 5 นาที", "Too many failed attempts; wait 5 minutes"),
    "cameras": ("กล้อง", "Cameras"),
    "feed": ("เหตุการณ์สด", "Live feed"),
    "sensors": ("เซนเซอร์", "Sensors"),
    "watchlists": ("บัญชีเฝ้าระวัง", "Watchlists"),
    "online": ("ออนไลน์", "online"),
    "offline": ("ออฟไลน์", "offline"),
    "unknown": ("ไม่ทราบ", "unknown"),
    "last_frame": ("ภาพล่าสุด", "last frame"),
    "last_heartbeat": ("สัญญาณล่าสุด", "last heartbeat"),
    "fps": ("เฟรม/วินาที", "fps"),
    "no_frame": ("ยังไม่มีภาพที่วิเคราะห์", "no analysed frame yet"),
    "no_cameras": ("ยังไม่พบกล้อง", "no cameras seen yet"),
    "store_down": ("คลังข้อมูลไม่พร้อม", "analytics store unavailable"),
    "plate": ("ทะเบียนรถ", "plate"),
    "face": ("ใบหน้า", "face"),
    "alert": ("การแจ้งเตือน", "alert"),
    "acknowledge": ("รับทราบ", "Acknowledge"),
    "close": ("ปิดเหตุ", "Close"),
    "reason": ("เหตุผล", "reason"),
    "legal_basis": ("ฐานทางกฎหมาย", "legal basis"),
    "expires": ("หมดอายุ", "expires"),
    "label": ("คำอธิบาย", "label"),
    "registration": ("เลขทะเบียน", "registration"),
    "province": ("จังหวัด", "province"),
    "tenant": ("หน่วยงาน", "tenant"),
    "add_plate": ("เพิ่มทะเบียน", "Add plate"),
    "add_face": ("เพิ่มใบหน้า", "Add face"),
    "photo": ("ภาพถ่าย (ใบหน้าเดียว)", "photo (one face)"),
    "remove": ("ลบ", "Remove"),
    "pm25": ("ฝุ่น PM2.5 รายอำเภอ", "PM2.5 by district"),
    "aqi": ("ดัชนีคุณภาพอากาศ", "Thai AQI"),
    "canal": ("ระดับน้ำในคลอง", "Canal levels"),
    "threshold": ("เกณฑ์เตือนภัย", "alert threshold"),
    "trend": ("แนวโน้ม", "trend"),
    "district": ("อำเภอ", "district"),
    "forbidden": ("ไม่มีสิทธิ์", "Not allowed"),
    "role": ("บทบาท", "role"),
    "acked": ("รับทราบแล้ว", "acknowledged"),
    "closed": ("ปิดแล้ว", "closed"),
    "connecting": ("กำลังเชื่อมต่อ", "connecting"),
    "live": ("สด", "live"),
}


def label(key: str, lang: str = "th") -> Markup:
    """Both languages of a label, the chosen one first, as HTML (``lang`` attributes for screen readers)."""
    th, en = LABELS[key]
    first, second = ((th, "th"), (en, "en")) if lang == "th" else ((en, "en"), (th, "th"))
    return Markup('<span lang="{}">{}</span> <span class="second" lang="{}">{}</span>').format(
        first[1], escape(first[0]), second[1], escape(second[0]))


def plain(key: str, lang: str = "th") -> str:
    """Both languages of a label as text: ``first / second``."""
    th, en = LABELS[key]
    return f"{th} / {en}" if lang == "th" else f"{en} / {th}"
