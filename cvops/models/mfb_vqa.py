"""MFB / MFH VQA head (Yu et al., ICCV 2017 / TNNLS 2018): image grid features [B, C, H, W] and
question token ids [B, T] → answer logits [B, num_answers].

The question is embedded and encoded by an LSTM (its state at each question's last token); MFB (or
MFH) fuses it with every grid cell to produce `glimpses` attention maps over the grid
(question-guided attention); the attended image vectors are fused with the question once more by
MFB/MFH and classified. Token id 0 is padding.
"""

import torch
from torch import Tensor, nn

from cvops.nn import MFB, MFH
from cvops.ops._validate import check_int

__all__ = ["MFBVQA"]


class MFBVQA(nn.Module):
    def __init__(
        self,
        num_answers: int,
        vocab_size: int,
        *,
        image_channels: int = 2048,
        embed_dim: int = 300,
        hidden_dim: int = 1024,
        k: int = 5,
        o: int = 1000,
        glimpses: int = 2,
        high_order: bool = False,
        attention_dim: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        for name, value in dict(
            num_answers=num_answers, vocab_size=vocab_size, image_channels=image_channels, glimpses=glimpses
        ).items():
            check_int("MFBVQA", name, value)
        self.glimpses, self.high_order = glimpses, bool(high_order)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        fusion = MFH if high_order else MFB
        width = (2 if high_order else 1) * o
        # Attention: fuse the question with each grid cell, then one logit per glimpse and cell.
        self.attention_fusion = fusion(image_channels, hidden_dim, k=k, o=o, dropout=dropout)
        self.attention = nn.Sequential(
            nn.Linear(width, attention_dim), nn.ReLU(inplace=True), nn.Linear(attention_dim, glimpses)
        )
        self.answer_fusion = fusion(glimpses * image_channels, hidden_dim, k=k, o=o, dropout=dropout)
        self.classifier = nn.Linear(width, num_answers)

    def encode_question(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] int64 (0 = padding, at least one real token each) → [B, hidden_dim]."""
        lengths = (tokens != 0).sum(1).clamp_min(1)
        states, _ = self.lstm(self.dropout(self.embed(tokens)))
        return states[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        if image.dim() != 4:
            raise ValueError(f"cvops.MFBVQA: image must be grid features [B, C, H, W], got shape {tuple(image.shape)}")
        if tokens.dim() != 2 or tokens.shape[0] != image.shape[0] or tokens.dtype != torch.long:
            raise ValueError(
                f"cvops.MFBVQA: tokens must be int64 [B, T] with B = {image.shape[0]}, got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        question = self.encode_question(tokens)  # [B, Q]
        cells = image.flatten(2).transpose(1, 2)  # [B, N, C]
        fused = self.attention_fusion(cells, question.unsqueeze(1))  # [B, N, o]: one question per cell
        weights = torch.softmax(self.attention(fused), dim=1)  # [B, N, G]: a distribution over cells
        attended = torch.einsum("bng,bnc->bgc", weights, cells).flatten(1)  # [B, G·C]
        return self.classifier(self.answer_fusion(attended, question))
