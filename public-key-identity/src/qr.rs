//! QR codes of identity cards, for showing on a terminal or a page and scanning with a phone.
//!
//! The payload is the card's compact JSON ([`IdentityCard::to_json`]), encoded with error
//! correction level L (a card of a few hundred bytes fits comfortably; screens are not dirty
//! paper). The scanner parses it with [`IdentityCard::from_json`], which verifies the signature.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use crate::card::IdentityCard;
use crate::error::Result;

/// Renders `data` as a QR code of Unicode half-block characters, two modules per character
/// cell, with a quiet zone. Light modules are drawn as glyphs in the text colour and dark modules
/// left as background, which scans on the usual light-on-dark terminal (as `qrencode -t UTF8`).
pub fn to_terminal(data: &[u8]) -> Result<String> {
    let code = QrCode::with_error_correction_level(data, EcLevel::L)?;
    Ok(code
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .build())
}

/// Renders `data` as a standalone SVG document, each module `module_px` pixels wide.
pub fn to_svg(data: &[u8], module_px: u32) -> Result<String> {
    let code = QrCode::with_error_correction_level(data, EcLevel::L)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .module_dimensions(module_px, module_px)
        .build())
}

impl IdentityCard {
    /// The card as a terminal QR code (see [`to_terminal`]).
    pub fn to_qr_terminal(&self) -> Result<String> {
        to_terminal(self.to_json().as_bytes())
    }

    /// The card as an SVG QR code (see [`to_svg`]).
    pub fn to_qr_svg(&self) -> Result<String> {
        to_svg(self.to_json().as_bytes(), 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HttpKeyUrl, Identity, KeyAlgorithm, httpkey::Host};

    #[test]
    fn card_renders_and_decodes_back() {
        let id = Identity::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let url = HttpKeyUrl::new(Host::Dns("hub.local".into()), 5985, id.key_id())
            .with_path_and_query("/")
            .unwrap();
        let card =
            IdentityCard::sign(&id, "kitchen hub", vec![url.clone(), url], vec![], 0).unwrap();
        let text = card.to_qr_terminal().unwrap();
        assert!(text.lines().count() > 20, "a card needs a sizeable code");
        assert!(text.contains('▀') || text.contains('▄') || text.contains('█'));
        let svg = card.to_qr_svg().unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.contains("<svg") && svg.trim_end().ends_with("</svg>")
        );

        // Decode the very modules we render with an independent QR decoder, and verify the card.
        let code = QrCode::with_error_correction_level(card.to_json(), EcLevel::L).unwrap();
        let (width, colors) = (code.width(), code.to_colors());
        let (scale, quiet) = (4, 4);
        let side = (width + 2 * quiet) * scale;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            let (mx, my) = (
                (x / scale).wrapping_sub(quiet),
                (y / scale).wrapping_sub(quiet),
            );
            if mx < width && my < width && colors[my * width + mx] == qrcode::Color::Dark {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(IdentityCard::from_json(&content).unwrap(), card);
    }

    #[test]
    fn too_much_data_is_an_error() {
        assert!(to_terminal(&[b'x'; 4000]).is_err());
    }
}
